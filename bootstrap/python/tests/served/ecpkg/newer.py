# Valid on Python 3.8+ only (an assignment expression): the child of an
# older Python must name the file, the line and both versions.
x = 1

if (y := x + 1):
    pass
