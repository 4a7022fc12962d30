# Sent along with ecpkg as a related module: importing it costs no request.
def f():
    return 'rel'
