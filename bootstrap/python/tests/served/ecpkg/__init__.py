# Served by the test master. The plain "import os" makes Python 2 probe
# ecpkg.os first: the child must not ask the master for it (not a child).
import os
import sys

VALUE = 'ecpkg'
PID = os.getpid()
