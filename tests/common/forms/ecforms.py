# Served by tests/importer.rs beside the packages it builds: one function
# per import form of issue 13, each returning plain values. 2.7 and 3.6+.
import importlib
import os
import sys


def namespace_split():
    # PEP 420 (3.3+): ecns has no __init__.py; its portions are in two
    # module-path entries.
    import ecns.one
    import ecns.two
    from ecns.deep import three
    return [ecns.one.WHO, ecns.two.WHO, three.WHO, getattr(ecns, '__file__', None)]


def extend_path():
    # pkgutil.extend_path in both entries' ecext/__init__.py.
    import ecext.first
    import ecext.second
    return [ecext.first.WHO, ecext.second.WHO, ecext.INIT]


def path_append():
    # The package appends a directory of its own to __path__.
    import ecpathx
    import ecpathx.extra_mod
    return [ecpathx.extra_mod.WHO]


def relative_every_depth():
    from ecrel.sub.deep import leaf
    import ecrel
    return leaf.chain() + [ecrel.sub.deep.leaf.__package__]


def import_module_runtime(suffix):
    # Names built at run time; absolute and relative.
    m = importlib.import_module('ecrel.' + suffix)
    r = importlib.import_module('.' + suffix, 'ecrel.sub')
    return [m.WHO, r.WHO]


def dynamic_then_inside():
    # ecinside imports ecinside_dep only inside a function.
    import ecinside
    before = 'ecinside_dep' in sys.modules
    return [before, ecinside.use()]


def as_file_on_a_file():
    if sys.version_info < (3, 7):
        return None
    import importlib.resources as r
    if sys.version_info >= (3, 9):
        cm = r.as_file(r.files('ecdata').joinpath('sub', 'hello.txt'))
    else:
        cm = r.path('ecdata', 'top.txt')
    with cm as p:
        p = str(p)
        real = os.path.isfile(p) and not p.startswith('master:')
        with open(p, 'rb') as f:
            data = f.read()
    return [real, data.decode(), os.path.exists(p)]


def as_file_on_a_directory():
    if sys.version_info < (3, 12):
        return None
    import importlib.resources as r
    with r.as_file(r.files('ecdata').joinpath('sub')) as d:
        d = str(d)
        names = sorted(os.listdir(d))
        with open(os.path.join(d, 'hello.txt'), 'rb') as f:
            data = f.read()
        with open(os.path.join(d, 'more', 'deeper.txt'), 'rb') as f:
            deeper = f.read()
    return [names, data.decode(), deeper.decode(), os.path.exists(d)]


def import_refused(name):
    try:
        importlib.import_module(name)
    except ImportError as e:
        return [type(e).__name__, str(e)]
    return None

