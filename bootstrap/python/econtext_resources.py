# econtext.resources: package resources for modules served by the master.
#
# The master serves this module built in, and sends it along with the
# first package it serves whose directory holds data files, so that the
# first resource read costs no extra round trip. It gives served packages
# what pkgutil.get_data, pkg_resources, and importlib.resources (3.7/3.8
# ResourceReader: open_binary, read_text, path; 3.9+ files(): joinpath,
# is_file, is_dir, iterdir, read_bytes, read_text, open, as_file) need:
#
# - get_data(path): path is under a served package's __file__ directory
#   ('master:' + its directory on the master); the bytes are fetched.
# - Reader(package): the resource reader, whose files() is a Traversable.
#
# Bytes and directory listings come from the master on demand, by
# GET_MODULE of 'package/rel/path' (PROTOCOL.md, "Modules"), and are
# cached by the importer like modules, in this context and in every
# intermediate on the way: a second read, or a sibling's, costs nothing.
# Nothing is written to disk except by as_file()/path(), which write a
# temporary file (Python's own code) and delete it afterwards.
#
# Importing this module also makes open() of a 'master:' path (beside a
# served module's __file__) read it from the master: see _install_open.
# The importer imports it as soon as the master has sent it, that is as
# soon as a package with data files is served.
import errno
import io
import sys
import zlib

import econtext.core as core

PREFIX = 'master:'


def _fetch(name):
    imp = core.importer
    if name not in imp.cache:
        imp._fetch(name)
    return imp.cache.get(name)


def _not_found(what):
    return IOError(errno.ENOENT, 'No such resource on the master', what)


def _package_of(path):
    # The served package whose directory holds path, the longest match,
    # and path relative to that directory.
    best = None
    for name, rec in list(core.importer.cache.items()):
        if not rec or not rec[1] or not rec[2] or '/' in name:
            continue
        d = rec[1][:-len('__init__.py')] if rec[3] else rec[1]
        if path.startswith(d) and (best is None or len(d) > len(best[1])):
            best = (name, d)
    if best is None:
        return None, None
    return best[0], path[len(best[1]):]


def get_data(path):
    # pkgutil.get_data and pkg_resources' providers pass a path built from
    # os.path.dirname(__file__); os.path.abspath() may have put the
    # current directory in front of 'master:'.
    p = path
    at = p.find(PREFIX)
    if at >= 0:
        p = p[at + len(PREFIX):]
    package, rel = _package_of(p)
    if package is None:
        raise _not_found(path)
    return Traversable(package, rel).read_bytes()


class Traversable(object):
    # importlib.resources.abc.Traversable, for one path under a served
    # package's directory (rel '' is the package's directory itself).
    def __init__(self, package, rel=''):
        self.package = package
        self.rel = '/'.join(p for p in rel.split('/') if p and p != '.')

    def __repr__(self):
        return 'Traversable(%r, %r)' % (self.package, self.rel)

    def __str__(self):
        rec = core.importer.cache.get(self.package)
        base = rec[1][:-len('__init__.py')] if rec and rec[3] else (rec and rec[1] or '')
        return PREFIX + base + self.rel

    @property
    def name(self):
        return self.rel.rpartition('/')[2] or self.package.rpartition('.')[2]

    def _rec(self):
        # A parent's listing, when already fetched, answers is_file and
        # is_dir for what it does not list without asking.
        parent, _, leaf = self.rel.rpartition('/')
        listing = core.importer.cache.get(self.package + '/' + parent)
        if self.rel and listing and listing[2] and leaf not in listing[4] \
                and leaf + '/' not in listing[4]:
            return None
        return _fetch(self.package + '/' + self.rel)

    def joinpath(self, *parts):
        segs = [self.rel]
        for part in parts:
            segs.extend(str(part).split('/'))
        return Traversable(self.package, '/'.join(segs))

    __truediv__ = __div__ = joinpath

    def is_dir(self):
        rec = self._rec()
        return bool(rec and rec[2])

    def is_file(self):
        rec = self._rec()
        return bool(rec and not rec[2])

    def exists(self):
        return bool(self._rec())

    def iterdir(self):
        rec = self._rec()
        if not rec or not rec[2]:
            raise _not_found(str(self))
        return iter([self.joinpath(c.rstrip('/')) for c in sorted(rec[4])])

    def read_bytes(self):
        rec = self._rec()
        if not rec or rec[2]:
            raise _not_found(str(self))
        return zlib.decompress(rec[3])

    def read_text(self, encoding=None, errors=None):
        return self.read_bytes().decode(encoding or 'utf-8', errors or 'strict')

    def open(self, mode='r', *args, **kwargs):
        data = io.BytesIO(self.read_bytes())
        if 'b' in mode:
            return data
        return io.TextIOWrapper(data, *args, **kwargs)


class Reader(object):
    # The loader's resource reader: files() for 3.9+ (TraversableResources),
    # the four ResourceReader methods for 3.7 and 3.8. A plain module's
    # resources are its package's, as with files on disk.
    def __init__(self, fullname):
        rec = core.importer.cache.get(fullname)
        self.package = fullname if rec and rec[2] else fullname.rpartition('.')[0]

    def files(self):
        return Traversable(self.package)

    def open_resource(self, resource):
        return self.files().joinpath(resource).open('rb')

    def resource_path(self, resource):
        # No file on disk: importlib.resources.path() then writes a
        # temporary copy from open_resource().
        raise _not_found(resource)

    def is_resource(self, name):
        return self.files().joinpath(name).is_file()

    def contents(self):
        return iter([t.name for t in self.files().iterdir()])


def _install_open():
    # Code written for files on disk opens paths beside __file__ (certifi
    # before 3.7, pytz without importlib.resources): open() of a path
    # under a served package's 'master:' directory, for reading, returns
    # its bytes from the master. Every other open() is Python's own.
    if sys.version_info[0] > 2:
        import builtins
    else:
        import __builtin__ as builtins
    real = builtins.open

    def open(file, mode='r', *args, **kwargs):
        name = getattr(file, '__fspath__', None)
        name = name() if name else file  # pathlib (3.9's files() gives one)
        if isinstance(name, (core._UNI, str)) and PREFIX in name and \
                not any(c in mode for c in 'wax+'):
            try:
                data = get_data(name)
            except EnvironmentError:
                return real(file, mode, *args, **kwargs)
            if 'b' in mode or sys.version_info[0] < 3:
                return io.BytesIO(data)
            names = ('buffering', 'encoding', 'errors', 'newline')
            kw = dict(zip(names, args))
            kw.update(kwargs)
            return io.TextIOWrapper(io.BytesIO(data), kw.get('encoding'), kw.get('errors'),
                                    kw.get('newline'))
        return real(file, mode, *args, **kwargs)
    open.__doc__ = real.__doc__
    builtins.open = open
    if io.open is real:
        io.open = open  # pathlib's Path.open calls io.open


_install_open()

if sys.version_info >= (3, 9):
    # isinstance(x, importlib.resources.abc.Traversable) holds, so code
    # that checks (and importlib_resources' as_file) takes the generic path.
    try:
        try:
            from importlib.resources.abc import Traversable as _ABC
        except ImportError:
            from importlib.abc import Traversable as _ABC
        _ABC.register(Traversable)
    except Exception:
        pass
