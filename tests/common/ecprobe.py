# Served to test contexts by tests/packages.rs, beside real PyPI packages:
# one function per check in issue 13's "Done when" list, each returning a
# plain value the test compares. Runs on 2.7 and 3.6+.
from __future__ import print_function

import os


def whoami():
    return [os.getuid(), os.geteuid()]


def can_list(path):
    try:
        os.listdir(path)
        return True
    except OSError:
        return False


def certifi_pem():
    # requests' own bundle, read through the path certifi gives.
    import certifi
    with open(certifi.where(), 'rb') as f:
        data = f.read()
    return [len(data), data.count(b'-----BEGIN CERTIFICATE-----') > 100]


def paris_offset():
    import datetime
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        from dateutil.zoneinfo import gettz
    tz = gettz('Europe/Paris')
    return int(datetime.datetime(2024, 7, 1, 12, tzinfo=tz).utcoffset().total_seconds())


def tokyo_offset():
    import datetime
    import pytz
    tz = pytz.timezone('Asia/Tokyo')
    return [str(tz), int(tz.localize(datetime.datetime(2024, 1, 1)).utcoffset().total_seconds())]


def highlight():
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer
    return highlight('print(1)\n', PythonLexer(), HtmlFormatter())


def rich_render():
    import io
    from rich.console import Console
    out = io.StringIO()
    c = Console(file=out, width=40, force_terminal=True, color_system='standard')
    c.print('[bold red]alert[/bold red] ok')
    return out.getvalue()


def jinja():
    import jinja2
    env = jinja2.Environment(loader=jinja2.DictLoader({'t': 'Hello {{ name|upper }}!{% for i in r %} {{ i }}{% endfor %}'}))
    return env.get_template('t').render(name='world', r=[1, 2])


def click_run():
    import click
    from click.testing import CliRunner

    @click.command()
    @click.option('--count', default=1, type=int)
    @click.argument('name')
    def hello(count, name):
        for _ in range(count):
            click.echo('hi %s' % name)
    r = CliRunner().invoke(hello, ['--count', '2', 'bob'])
    return [r.exit_code, r.output]


def attrs_class():
    import attr

    @attr.s(frozen=True)
    class Point(object):
        x = attr.ib()
        y = attr.ib(default=0)
    p = Point(1)
    return [repr(p), p == Point(1, 0), attr.asdict(p)['y']]


def versions():
    from packaging.version import Version
    return [Version('1.10') > Version('1.9'), str(Version('1.0.0rc1')), Version('2.0.post1').is_postrelease]


def resources_api():
    # The importlib.resources surface a package's data needs, on the
    # versions that have it; pkgutil.get_data everywhere.
    import pkgutil
    import sys
    out = {'get_data': len(pkgutil.get_data('certifi', 'cacert.pem'))}
    if sys.version_info >= (3, 7):
        import importlib.resources as r
        out['read_text'] = len(r.read_text('certifi', 'cacert.pem'))
        with r.open_binary('certifi', 'cacert.pem') as f:
            out['open_binary'] = len(f.read())
        with r.path('certifi', 'cacert.pem') as p:
            out['path_exists'] = os.path.exists(str(p))
        out['path_removed'] = not os.path.exists(str(p))
    if sys.version_info >= (3, 9):
        import importlib.resources as r
        t = r.files('tzdata').joinpath('zoneinfo', 'Asia', 'Tokyo')
        out['is_file'] = t.is_file()
        out['is_dir'] = r.files('tzdata').joinpath('zoneinfo').is_dir()
        out['iterdir'] = 'Europe' in [x.name for x in r.files('tzdata.zoneinfo').iterdir()]
        out['tzif'] = t.read_bytes()[:4].decode()
        with r.as_file(t) as p:
            out['as_file'] = open(str(p), 'rb').read()[:4].decode()
        out['as_file_removed'] = not os.path.exists(str(p))
    return out


def local_of(names):
    # The top-level names among these that this interpreter imports by
    # itself (builtin or on its own sys.path: here, only its stdlib).
    import sys
    out = []
    for n in sorted(set(x.split('.')[0] for x in names)):
        found = n in sys.builtin_module_names
        try:
            if not found and sys.version_info[0] >= 3:
                from importlib.machinery import PathFinder
                found = PathFinder.find_spec(n) is not None
            elif not found:
                import imp
                f = imp.find_module(n)[0]
                if f:
                    f.close()
                found = True
        except ImportError:
            pass
        if found:
            out.append(n)
    return out
