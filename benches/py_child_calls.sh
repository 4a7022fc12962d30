#!/bin/sh
# User-space instructions per call of the Python child's in-flight path
# (benches/py_child_calls.py under callgrind: 2,000 calls, minus the same
# run without the calls: making the frames and starting are not counted).
# The same count every run. Usage: bash benches/py_child_calls.sh [PYTHON]
PY=${1:-/usr/bin/python3}
HERE=$(dirname "$0")
export PYTHONHASHSEED=0
ir() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$PY" "$HERE/py_child_calls.py" 2000 $1 2>&1 |
        grep -o 'Collected : [0-9]*' | grep -o '[0-9]*'
}
a=$(ir setup)
b=$(ir unchecked)
echo "$PY: $(( (b - a) / 2000 )) instructions per call"
