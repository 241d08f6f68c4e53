"""Generated LISTA against hand-written PyTorch: forward and forward+backward, eager and torch.compile.

The two run alternately in one process (pairs), so drifts in machine speed hit both;
we report the median time of each and the median of per-pair ratios.

    python benchmarks/lista_vs_handwritten.py [--pairs 21] [--batch 256] [--compile] [--device cpu]
"""
import argparse
import os
import pathlib
import statistics
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import dpc  # noqa: E402
from handwritten import HandLISTA, TunedLISTA  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device, repeat):
    sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeat


def make(m, n, T, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(m, n, generator=g, dtype=torch.float64) / m ** 0.5
    D = (D / D.norm(dim=0)).to(dtype=dtype, device=device)
    LISTA = dpc.load(ROOT / "examples" / "lista.dp")
    gen = LISTA(D=D, lam=0.1, steps=T)
    return gen, {"idiomatic": HandLISTA(D, 0.1, T), "tuned": TunedLISTA(D, 0.1, T)}


def compare(gen, hand, x, mode, pairs, repeat, device):
    def fwd(net):
        with torch.no_grad():
            net(x)

    def fwd_bwd(net):
        net(x).square().sum().backward()

    step = fwd if mode == "forward" else fwd_bwd
    for _ in range(3):  # warm up (and compile)
        step(gen), step(hand)
    g_times, h_times = [], []
    for _ in range(pairs):
        g_times.append(timed(lambda: step(gen), device, repeat))
        h_times.append(timed(lambda: step(hand), device, repeat))
    ratios = [g / h for g, h in zip(g_times, h_times)]
    return statistics.median(g_times), statistics.median(h_times), statistics.median(ratios)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", type=int, default=250)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--pairs", type=int, default=21)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of both")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen, hands = make(args.m, args.n, args.layers, torch.float32, args.device)
    x = torch.randn(args.batch, args.m, device=args.device)
    for hand in hands.values():  # same function: the comparison is of code, not of networks
        assert torch.allclose(gen(x), hand(x), atol=1e-4)
    print(f"LISTA m={args.m} n={args.n} T={args.layers} batch={args.batch} float32 on {args.device}, "
          f"{args.threads} threads, torch {torch.__version__}, {args.pairs} pairs x {args.repeat} calls")
    print("| hand-written | run | mode | generated (ms) | hand-written (ms) | generated / hand-written |")
    print("| --- | --- | --- | --- | --- | --- |")
    for style, hand in hands.items():
        variants = [("eager", gen, hand)]
        if args.compile:
            torch._dynamo.reset()
            variants.append(("torch.compile", torch.compile(gen), torch.compile(hand)))
        for name, g, h in variants:
            for mode in ("forward", "forward+backward"):
                tg, th, r = compare(g, h, x, mode, args.pairs, args.repeat, args.device)
                print(f"| {style} | {name} | {mode} | {tg * 1e3:.2f} | {th * 1e3:.2f} | {r:.3f} |", flush=True)


if __name__ == "__main__":
    main()
