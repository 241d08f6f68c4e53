"""Where a small svt call's time goes (docs/structured.md, the RPCA speed section): the Python cost per call of
torch.matmul against torch.bmm on svt's batched products, and of svt's autograd.Function against the same
forward lines called directly (torch.no_grad). Measures; asserts nothing.

    OMP_NUM_THREADS=1 python benchmarks/svt_overhead.py [--batch 8 --m 12 --n 10]

Each row: the median over --rounds rounds of the mean time of --calls calls; the candidates of a row group
run in turn within every round.
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from perf_common import machine_line  # noqa: E402


def timed(candidates, rounds, calls):
    times = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--m", type=int, default=12)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args(argv)
    import torch
    from dpc.backends.torch import runtime
    torch.set_num_threads(1)
    svt = runtime.namespace("_svt")["_svt"]
    function = runtime.namespace("_SVTFunction")["_SVTFunction"]
    A = torch.randn(args.batch, args.m, args.n, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(0.3)
    U, s, Vh = torch.linalg.svd(A, full_matrices=False)
    G, M = torch.randn_like(A), torch.randn(args.batch, s.shape[-1], s.shape[-1])
    print(f"# svt's pieces on {args.batch} matrices of {args.m} x {args.n}, float32, 1 torch thread; "
          f"median of {args.rounds} rounds of {args.calls} calls (us a call)")
    print(f"# {machine_line()}")
    print("| call | torch.matmul (@) | torch.bmm |")
    print("| --- | --- | --- |")
    for label, a, b in (("G V", G, Vh.mT), ("U^T (G V)", U.mT, G), ("U M", U, M)):
        row = timed({"matmul": lambda: a @ b, "bmm": lambda: torch.bmm(a, b)}, args.rounds, args.calls)
        print(f"| {label} | {row['matmul']:.1f} | {row['bmm']:.1f} |")
    with torch.no_grad():
        row = timed({"svd": lambda: torch.linalg.svd(A, full_matrices=False),
                     "function": lambda: function.apply(A, t), "svt": lambda: svt(A, t)}, args.rounds, args.calls)
    print()
    print("| without a gradient (torch.no_grad) | us a call |")
    print("| --- | --- |")
    print(f"| torch.linalg.svd alone | {row['svd']:.1f} |")
    print(f"| _SVTFunction.apply (the autograd.Function) | {row['function']:.1f} |")
    print(f"| _svt (the same lines called directly) | {row['svt']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
