"""Learned robust PCA (examples/rpca.dp; Sprechmann, Bronstein & Sapiro 2015) on synthetic low-rank plus
sparse matrices, trained at a fixed depth against the untrained network (proximal gradient) at that depth;
and the generated network's speed against a hand-written PyTorch one. Measures; asserts nothing.

    python benchmarks/rpca.py                    # both parts
    python benchmarks/rpca.py --part train       # the training table and plot (rpca_nmse.png)
    python benchmarks/rpca.py --part speed       # forward+backward and forward, generated / hand-written
    python benchmarks/rpca.py --quick            # a smoke run

Data: X = L + S per sample, m x n; L = A B with A (m x r), B (r x n) Gaussian; S with each entry an
outlier with probability p, of sign +-1 and magnitude uniform in [1, 4]; noiseless. The error of an
estimate is the NMSE 10 log10(sum ||L_hat - L||^2 / sum ||L||^2) over a fixed test set (the same for S).
Networks, compiled by dpc from examples/rpca.dp at `unroll` = --layers:
  - untrained: proximal gradient on 0.5||X - L - S||^2 + mu ||L||_* + lam ||S||_1, (mu, lam) the best on
    validation data at this depth from a grid (NMSE of L);
  - trained, `learn mu, lam untied` (the example as written: 2 numbers per layer), from that start;
  - trained, `learn weights untied`: L <- svt(W X + S_L L + S_S S, theta), S <- soft(W2 X + ...), m x m maps
    on the left, from the same start.
Trained with Adam on ||L_hat - L||^2 + ||S_hat - S||^2 (S_hat from the same parameters with `output S`),
fresh samples every step, one torch thread.

Speed: the generated network (`learn mu, lam untied`) against benchmarks/handwritten.py's HandRPCA, the same
math (G = (L + S - X)/2 once per layer, batched torch.linalg.svd with torch's own backward, softplus
parametrisation), run alternately in one process (which one first alternates from pair to pair); the median
of per-pair time ratios.
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from perf_common import fmt_ms, machine_line  # noqa: E402

RPCA = (ROOT / "examples" / "rpca.dp").read_text()


def data(count, m, n, rank, p, rng):
    low = rng.standard_normal((count, m, rank)) @ rng.standard_normal((count, rank, n))
    spikes = rng.choice([-1.0, 1.0], (count, m, n)) * rng.uniform(1, 4, (count, m, n))
    sparse = np.where(rng.random((count, m, n)) < p, spikes, 0.0)
    return low + sparse, low, sparse


def nmse_db(estimate, truth):
    return float(10 * np.log10(np.sum((estimate - truth) ** 2) / np.sum(truth ** 2)))


def classes(text, layers):
    """The network's class with `output L` and with `output S` (the same parameters)."""
    import torch
    from dpc.api import compile_source
    out = []
    for output in ("L", "S"):
        source = compile_source(text.replace("output L", f"output {output}"), "rpca.dp", {"unroll": str(layers)})
        namespace = {"__name__": f"rpca_{output}"}
        exec(compile(source, "rpca.dp", "exec"), namespace)
        out.append(sized(next(v for v in namespace.values() if isinstance(v, type)
                              and v.__module__ == f"rpca_{output}" and issubclass(v, torch.nn.Module))))
    return out


def sized(cls, dims=("m", "n")):
    """cls's constructor, given the sizes only if it takes them (a dim that comes with X may be read from it)."""
    import inspect
    taken = inspect.signature(cls).parameters
    return lambda **kwargs: cls(**{k: v for k, v in kwargs.items() if k in taken or k not in dims})


def twin(net_L, Class_S, kwargs):
    """A module with `output S` that shares net_L's parameters (the same ParameterLists)."""
    net_S = Class_S(**kwargs)
    for name, _ in list(net_L.named_children()):
        setattr(net_S, name, getattr(net_L, name))
    return net_S


def per_layer(net_L, net_S, X, low, sparse):
    import torch
    with torch.no_grad():
        Ls = net_L(torch.tensor(X), trace=True)
        Ss = net_S(torch.tensor(X), trace=True)
    return [nmse_db(L.numpy(), low) for L in Ls], [nmse_db(S.numpy(), sparse) for S in Ss]


def train(net_L, net_S, args, seed, lr, label):
    import torch
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam([p for p in net_L.parameters() if p.requires_grad], lr=lr)
    start = time.perf_counter()
    for step in range(args.steps):
        X, low, sparse = (torch.tensor(a) for a in data(args.batch, args.m, args.n, args.rank, args.p, rng))
        loss = ((net_L(X) - low).square().sum() + (net_S(X) - sparse).square().sum()) / args.batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % max(args.steps // 4, 1) == 0:
            print(f"  {label}: step {step + 1}/{args.steps}, loss {loss.item():.4g}", flush=True)
    return time.perf_counter() - start


def part_train(args):
    import torch
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    X_val, low_val, sparse_val = data(200, args.m, args.n, args.rank, args.p, rng)
    X_test, low_test, sparse_test = data(1000, args.m, args.n, args.rank, args.p, rng)
    size = {"m": args.m, "n": args.n}
    Plain_L, Plain_S = classes(RPCA.replace("learn  mu, lam untied\n", ""), args.layers)
    grid = [(mu, lam) for mu in (0.5, 1, 2, 4, 8) for lam in (0.1, 0.2, 0.4, 0.8, 1.6)]
    scores = {}
    for mu, lam in grid:
        with torch.no_grad():
            L = Plain_L(mu=mu, lam=lam, **size)(torch.tensor(X_val)).numpy()
        scores[mu, lam] = nmse_db(L, low_val)
    mu, lam = min(scores, key=scores.get)
    start = {"mu": mu, "lam": lam, **size}
    rows_L, rows_S, times = {}, {}, {}
    plain = Plain_L(**start), Plain_S(**start)
    rows_L["untrained"], rows_S["untrained"] = per_layer(*plain, X_test, low_test, sparse_test)
    for label, text, lr in (("trained mu, lam", RPCA, args.lr_scalars),
                            ("trained weights", RPCA.replace("learn  mu, lam untied", "learn  weights untied"),
                             args.lr_weights)):
        Class_L, Class_S = classes(text, args.layers)
        net_L = Class_L(**start)
        net_S = twin(net_L, Class_S, start)
        times[label] = train(net_L, net_S, args, args.seed + 1, lr, label)
        rows_L[label], rows_S[label] = per_layer(net_L, net_S, X_test, low_test, sparse_test)

    print()
    print(f"# learned RPCA, X = L + S of {args.m}x{args.n}, rank {args.rank}, outliers p = {args.p}; "
          f"{args.layers} layers; {args.steps} Adam steps (batch {args.batch}, lr {args.lr_scalars} for mu, lam, "
          f"{args.lr_weights} for weights); mu = {mu}, lam = {lam} (best untrained on validation); "
          f"test NMSE (dB), 1000 matrices")
    print(f"# {machine_line()}")
    labels = list(rows_L)
    print("| layer | " + " | ".join(f"L: {name}" for name in labels) + " | "
          + " | ".join(f"S: {name}" for name in labels) + " |")
    print("| --- |" + " --- |" * (2 * len(labels)))
    for t in range(args.layers):
        print(f"| {t + 1} | " + " | ".join(f"{rows_L[name][t]:.2f}" for name in labels) + " | "
              + " | ".join(f"{rows_S[name][t]:.2f}" for name in labels) + " |")
    for name, seconds in times.items():
        print(f"# {name}: {seconds:.0f} s of training")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for ax, rows, part in ((axes[0], rows_L, "L (low rank)"), (axes[1], rows_S, "S (sparse)")):
            for name in labels:
                ax.plot(range(1, args.layers + 1), rows[name], marker="o", label=name)
            ax.set_xlabel("layer")
            ax.set_ylabel("test NMSE (dB)")
            ax.set_title(part)
            ax.grid(alpha=0.3)
        axes[0].legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")


def part_speed(args):
    import torch
    from handwritten import HandRPCA
    torch.manual_seed(args.seed)
    Class_L, _ = classes(RPCA, args.layers)
    print()
    print(f"# generated examples/rpca.dp vs hand-written HandRPCA, {args.layers} layers, float32, "
          f"{args.pairs} pairs of {args.repeat} calls each, which first alternating; ratio = generated / hand-written "
          f"(median of per-pair ratios)")
    print(f"# {machine_line()}")
    print("| batch x m x n | mode | generated (ms) | hand-written (ms) | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for batch, m, n in args.sizes:
        X = torch.tensor(data(batch, m, n, args.rank, args.p, np.random.default_rng(0))[0], dtype=torch.float32)
        gen = Class_L(m=m, n=n, mu=1.0, lam=0.2).float()
        hand = HandRPCA(1.0, 0.2, args.layers).float()
        with torch.no_grad():
            assert torch.allclose(gen(X), hand(X), atol=1e-4), "the two networks differ"

        def fwd(net):
            with torch.no_grad():
                net(X)

        def fwd_bwd(net):
            net(X).square().sum().backward()

        for mode, step in (("forward+backward", fwd_bwd), ("forward", fwd)):
            for _ in range(2):
                step(gen), step(hand)
            g, h = [], []
            for pair in range(args.pairs):  # which runs first alternates: a bias of the first (or second) cancels
                for net, out in ((gen, g), (hand, h))[::1 if pair % 2 == 0 else -1]:
                    t = time.perf_counter()
                    for _ in range(args.repeat):
                        step(net)
                    out.append((time.perf_counter() - t) / args.repeat)
            ratio = statistics.median(a / b for a, b in zip(g, h))
            print(f"| {batch} x {m} x {n} | {mode} | {fmt_ms(statistics.median(g))} | "
                  f"{fmt_ms(statistics.median(h))} | {ratio:.3f} |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("train", "speed", "both"), default="both")
    parser.add_argument("--m", type=int, default=20)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--rank", type=int, default=2)
    parser.add_argument("--p", type=float, default=0.1)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr-scalars", type=float, default=1e-2)
    parser.add_argument("--lr-weights", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="rpca_nmse.png", help="where to save the plot ('' for none)")
    parser.add_argument("--sizes", default="64x20x16,16x64x64", help="batch x m x n, comma separated (speed)")
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run (20 steps, 3 pairs)")
    args = parser.parse_args(argv)
    args.sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    if args.quick:
        args.steps, args.pairs, args.repeat, args.sizes = 20, 3, 1, [(8, 12, 10)]
    import torch
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    if args.part in ("train", "both"):
        part_train(args)
    if args.part in ("speed", "both"):
        part_speed(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
