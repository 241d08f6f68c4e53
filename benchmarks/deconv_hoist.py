"""The deconvolution network of examples/deconv_shrinkage.dp with and without loop-invariant hoisting
(backends/torch/hoist.py::hoist_invariants: convT(k, f), the blur adjoint of the observed image, once per call
instead of once per stage), in ONE run. Measures; asserts nothing.

    OMP_NUM_THREADS=1 python benchmarks/deconv_hoist.py                 # 8 x 64 x 64 and 4 x 128 x 128
    OMP_NUM_THREADS=1 python benchmarks/deconv_hoist.py --rounds 9 --reps 5
    python benchmarks/deconv_hoist.py --quick                           # small sizes, seconds (a smoke run)

Both modules are generated here from the same program by the same compiler; "without" is the planner with its
hoisting turned off (what dpc generated before hoisting was a property of the expression: the stage computed
_conv_t(self.k, f, 'circular') itself). Same weights (the learned shrinkage at its fit), a 15 x 15 Gaussian blur
(std 1.6, examples/train_deconv.py's kernel) and the two forward-difference filters; before timing, the outputs
are compared (printed: the largest difference relative to the output's largest value). Timing: float32, one
thread (--threads), `rounds` rounds, each timing both modules in turn (alternating, so that load changes hit them
alike): after `warmup` calls, the median of `reps` calls. A forward call runs under torch.no_grad(); a
forward+backward call is `net(f).square().mean().backward()` (the RBF weights' gradients cleared outside the
timed region). Reported per size: the median over rounds of each module's time and of the per-round ratio
with / without.
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))


def modules():
    """(with hoisting, without) classes generated from examples/deconv_shrinkage.dp."""
    from dpc.api import compile_with_program
    from dpc.backends.torch import plan as planner
    from dpc.backends.torch.emit import write_module

    program = compile_with_program((ROOT / "examples" / "deconv_shrinkage.dp").read_text(),
                                   "deconv_shrinkage.dp").program
    sources = [write_module(planner.plan_module(program), "deconv_shrinkage.dp")]
    hoist = planner.hoist_invariants
    planner.hoist_invariants = lambda p, ns, first, step, varying: (first, step, [])
    try:
        sources.append(write_module(planner.plan_module(program), "deconv_shrinkage.dp"))
    finally:
        planner.hoist_invariants = hoist
    classes = []
    for source in sources:
        namespace = {"__name__": "deconv_hoist_generated"}
        exec(compile(source, "deconv_shrinkage.py", "exec"), namespace)  # noqa: S102 - generated just above
        classes.append(namespace["DeconvShrinkage"])
        where = "once, before the stages" if "convT_kf = " in source else "in every stage"
        print(f"{'with' if len(classes) == 1 else 'without'} hoisting: _conv_t(self.k, f, 'circular') {where}")
    return classes


def timed(call, warmup, reps):
    for _ in range(warmup):
        call()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="8x64x64,4x128x128", help="batch x h x w, comma-separated")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="2 x 24 x 24, 2 rounds of 2: a smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.rounds, args.reps, args.warmup = "2x24x24", 2, 2, 1
    torch.set_num_threads(args.threads)
    from train_deconv import derivative_filters, gaussian_kernel
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float32")
    With, Without = modules()
    k = torch.tensor(gaussian_kernel(1.6), dtype=torch.float32)
    D = torch.tensor(derivative_filters(), dtype=torch.float32)
    nets = {"with": With(k=k, D=D), "without": Without(k=k, D=D)}
    gen = torch.Generator().manual_seed(0)
    for size in args.sizes.split(","):
        b, h, w = (int(v) for v in size.split("x"))
        f = 255 * torch.rand(b, h, w, generator=gen, dtype=torch.float32)
        with torch.no_grad():
            a, c = nets["with"](f), nets["without"](f)
        print(f"\n{b} x {h} x {w}: outputs differ by {float((a - c).abs().max() / c.abs().max()):.1e} (relative)")

        def forward(net):
            with torch.no_grad():
                net(f)

        def backward(net):
            for p in net.parameters():
                p.grad = None
            net(f).square().mean().backward()

        for label, call in (("forward", forward), ("forward+backward", backward)):
            rows = {name: [] for name in nets}
            ratios = []
            for _ in range(args.rounds):
                for name, net in nets.items():
                    rows[name].append(timed(lambda: call(net), args.warmup, args.reps))
                ratios.append(rows["with"][-1] / rows["without"][-1])
            print(f"  {label:<17} with {1e3 * statistics.median(rows['with']):8.1f} ms "
                  f"({1e3 * min(rows['with']):.1f}-{1e3 * max(rows['with']):.1f}), without "
                  f"{1e3 * statistics.median(rows['without']):8.1f} ms "
                  f"({1e3 * min(rows['without']):.1f}-{1e3 * max(rows['without']):.1f}), "
                  f"with / without {statistics.median(ratios):.3f} (median of {args.rounds} rounds)")


if __name__ == "__main__":
    main()
