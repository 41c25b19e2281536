#!/usr/bin/env python3
"""
A byte relay: runs a command and copies stdin to its stdin and its stdout
to stdout, understanding nothing.  The benchmark uses it as the floor for
any out-of-process gateway: the cost of one extra process hop each way.
"""

import os
import selectors
import subprocess
import sys


def main() -> None:
    child = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, child.stdin.fileno())
    sel.register(child.stdout.fileno(), selectors.EVENT_READ, 1)
    while True:
        for key, _ in sel.select():
            data = os.read(key.fd, 1 << 20)
            if not data:
                child.stdin.close()
                child.wait()
                return
            view = memoryview(data)
            while view:
                view = view[os.write(key.data, view):]


if __name__ == "__main__":
    main()
