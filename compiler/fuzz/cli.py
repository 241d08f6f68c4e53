"""`dpc fuzz` and `python -m dpc.fuzz`: the command line of a fuzz run."""
from __future__ import annotations

import argparse
import os
import sys

import dpc.fuzz
from dpc.fuzz.campaign import run
from dpc.fuzz.generate import FAMILIES


def main(argv=None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=dpc.fuzz.__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--programs", type=int, default=200, help="how many programs (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=os.cpu_count(), help="worker processes (default: CPU count)")
    ap.add_argument("--out", metavar="DIR", help="write failing programs and summary.md here")
    ap.add_argument("--mutate-share", type=float, default=0.3, help="share of mutated programs (default 0.3)")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per program (default 5)")
    ap.add_argument("--shrink", type=int, default=3, help="failures shrunk per kind (default 3)")
    ap.add_argument("--family", choices=sorted(FAMILIES), help="generate only this family's programs (operator: "
                    "the image and signal programs of diff, grad2d, conv)")
    args = ap.parse_args(argv)
    report = run(args.programs, args.seed, args.jobs, args.out, args.mutate_share, args.timeout, args.shrink,
                 log=lambda s: print(s, file=sys.stderr, flush=True),
                 **({"family": args.family} if args.family else {}))
    print(report.summary())
    if report.failures:
        print()
        print(report.describe_failures())
    return 0
