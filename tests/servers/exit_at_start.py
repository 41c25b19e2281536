"""Backend that fails immediately: writes a message to stderr and exits 1."""

import sys

sys.stderr.write("exit_at_start.py: refusing to start (intentional test failure)\n")
sys.stderr.flush()
sys.exit(1)
