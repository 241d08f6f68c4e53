"""The fuzzer moved to the dpc.fuzz package: `dpc fuzz --programs N ...` (or `python -m dpc.fuzz`).
This file only forwards the command line, so that recorded commands (docs/trust.md) still run."""
import sys

from dpc.fuzz.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="benchmarks/fuzz.py"))
