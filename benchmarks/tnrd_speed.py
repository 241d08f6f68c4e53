"""Forward+backward (and forward) time of the TNRD that dpc generates from examples/tnrd.dp against the
hand-written PyTorch TNRD of benchmarks/tnrd_handwritten.py, same sizes, in ONE run (issue 20, "Speed").
Measures; asserts nothing.

    OMP_NUM_THREADS=1 python benchmarks/tnrd_speed.py                    # k=24, s=5, 5 stages, 8 x 48 x 48
    OMP_NUM_THREADS=1 python benchmarks/tnrd_speed.py --analytic         # tnrd.dp without learn influence
    OMP_NUM_THREADS=1 python benchmarks/tnrd_speed.py --rounds 9 --reps 5
    python benchmarks/tnrd_speed.py --quick                              # small sizes, seconds (a smoke run)

Which hand-written network it is compared with depends on the program:

- tnrd.dp with the analytic influence (the derivative of the Lorentzian, `learn K, lam untied` only): the
  hand-written TNRD with its RBF influence replaced by the same analytic function, phi(z) = a z / (1 + z^2/b^2)
  (`Lorentzian` below: tnrd_handwritten.TNRD's conv, conv_adjoint and zero-mean filters, nothing else
  changed). This is the like-for-like comparison; the hand-written RBF TNRD (10 nearest of 63 centres, the
  speed reference of docs/imaging.md) is timed beside it for scale: it does more work per stage.
- tnrd.dp with `learn influence` (the module has `influence_curves`): the hand-written TNRD with 63 RBFs,
  summed over the 10 nearest centres (`--rbf local`), its weights fitted to the same Lorentzian (the
  generated module fits its own at construction); the ratio against it is the issue's.

Both networks get the same filters (the 2-D DCT basis without its constant element) and the same input; before
timing, their outputs on that input are compared (printed: the largest difference relative to the output's
largest value). Timing: float32 (torch's default dtype), one thread (--threads), `rounds` rounds, each
timing every network in turn (alternating, so that load changes hit them alike): after `warmup` calls, the
median of `reps` calls. A forward+backward call is `net(x).square().mean().backward()` with the gradients
cleared before it (outside the timed region); a forward call runs under torch.no_grad(). Reported: the
median over rounds of each network's time, and the median over rounds of the per-round ratio
generated / hand-written (the issue asks for <= 1).
"""
from __future__ import annotations

import argparse
import inspect
import pathlib
import statistics
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import tnrd_handwritten as H  # noqa: E402


class Lorentzian(H.TNRD):
    """tnrd_handwritten.TNRD with the analytic influence phi(z) = a z / (1 + z^2 / b^2) of tnrd.dp (the RBF
    weights are kept as parameters but not used; they get no gradient)."""

    def __init__(self, stages, size, filters, a, b):
        super().__init__(stages, size, filters, rbfs=63)
        self.a, self.b = a, b
        self.w.requires_grad_(False)

    def influence(self, t, z):
        return self.a * z / (1 + (z / self.b).square())


def build(args):
    sys.path.insert(0, str(ROOT / "examples"))
    from train_denoise import load_network
    Gen = load_network(args.program, getattr(args, "analytic", False))
    a = 0.2 / args.size ** 2
    options = {"k": args.filters, "s": args.size, "steps": args.stages}
    if "a" in inspect.signature(Gen).parameters:
        options["a"] = a  # tnrd.dp's a = 0.2 / s^2, the hand-written's init_a
    gen = Gen(**options)
    learned = hasattr(gen, "influence_curves")
    hand = {}
    if learned:
        hand["hand-written, RBF (10 nearest of 63)"] = H.TNRD(args.stages, args.size, args.filters, 63, rbf="local")
    else:
        hand["hand-written, analytic influence"] = Lorentzian(args.stages, args.size, args.filters, a, 50.0)
        hand["hand-written, RBF (10 nearest of 63), for scale"] = H.TNRD(args.stages, args.size, args.filters, 63,
                                                                          rbf="local")
    return gen, learned, hand


def agreement(gen, net, x):
    """max |gen(x) - net(x)| / max |net(x)| on x (batch, h, w)."""
    with torch.no_grad():
        g, h = gen(x), net(x[:, None])[:, 0]
    return float((g - h).abs().max() / h.abs().max())


def timed(fn, reps, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fwd_bwd(net, x):
    params = [p for p in net.parameters() if p.requires_grad]

    def call():
        for p in params:
            p.grad = None
        net(x).square().mean().backward()
    return call


def fwd(net, x):
    def call():
        with torch.no_grad():
            net(x)
    return call


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--program", default=str(ROOT / "examples" / "tnrd.dp"))
    ap.add_argument("--analytic", action="store_true",
                    help="the program without its `learn influence` (the analytic rho'), compared with `Lorentzian`")
    ap.add_argument("--filters", type=int, default=24)
    ap.add_argument("--size", type=int, default=5)
    ap.add_argument("--stages", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=5, help="timed calls per network and round (their median)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="2 stages, 8 filters, 4 x 24 x 24, 2 rounds of 2")
    args = ap.parse_args(argv)
    if args.quick:
        args.stages, args.filters, args.batch, args.patch, args.rounds, args.reps, args.warmup = 2, 8, 4, 24, 2, 2, 1
    torch.set_num_threads(args.threads)
    from perf_common import machine_line
    print(f"Machine: {machine_line()}")
    torch.manual_seed(0)
    gen, learned, hand = build(args)
    # the same filters: the generated module's first stage's (the DCT basis), in every stage of each
    with torch.no_grad():
        K0 = list(gen.K)[0].detach()
        for net in hand.values():
            net.R.copy_(K0[None, :, None].expand_as(net.R))
    x = 255 * torch.rand(args.batch, args.patch, args.patch, generator=torch.Generator().manual_seed(0))
    print(f"TNRD: {args.stages} stages, {args.filters} filters {args.size}x{args.size}, batch {args.batch} x "
          f"{args.patch}x{args.patch}, {torch.get_default_dtype()}; generated from {args.program} with "
          f"{'learned (RBF)' if learned else 'analytic (Lorentzian)'} influence")
    for name, net in hand.items():
        print(f"  outputs: generated vs {name}: max difference / max value {agreement(gen, net, x):.1e}")
    nets = {"generated": (gen, x)} | {name: (net, x[:, None]) for name, net in hand.items()}
    first = next(iter(hand))
    results = {}
    for mode, make in (("forward+backward", fwd_bwd), ("forward (no_grad)", fwd)):
        times = {name: [] for name in nets}
        ratios = {name: [] for name in hand}
        for r in range(args.rounds):
            order = list(nets) if r % 2 == 0 else list(reversed(nets))
            now = {}
            for name in order:
                net, inp = nets[name]
                now[name] = timed(make(net, inp), args.reps, args.warmup)
                times[name].append(now[name])
            for name in hand:
                ratios[name].append(now["generated"] / now[name])
        print(f"\n{mode}: median over {args.rounds} rounds of the median of {args.reps} calls")
        for name in nets:
            ts = times[name]
            print(f"  {name:48s} {1000 * statistics.median(ts):8.1f} ms  (rounds {1000 * min(ts):.1f} to "
                  f"{1000 * max(ts):.1f})")
        for name in hand:
            rs = ratios[name]
            print(f"  ratio generated / {name}: {statistics.median(rs):.3f} (rounds {min(rs):.3f} to "
                  f"{max(rs):.3f})")
        results[mode] = {"ms": {n: 1000 * statistics.median(t) for n, t in times.items()},
                         "ratio": statistics.median(ratios[first])}
    print(f"\nMachine: {machine_line()}")
    return results


if __name__ == "__main__":
    main()
