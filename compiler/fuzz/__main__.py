import sys

from dpc.fuzz.cli import main

sys.exit(main(prog="python -m dpc.fuzz"))
