from ecpkg import VALUE


def f():
    return VALUE + '.sub'


def fail():
    raise ValueError('failed in sub')
