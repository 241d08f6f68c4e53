"""Group LISTA (examples/group_lista.dp) trained on synthetic row-sparse codes, against group ISTA, group FISTA
and the untrained network at the same depth. Measures; asserts nothing.

    python benchmarks/group_lista.py             # 2000 Adam steps, table and plot (group_lista_nmse.png)
    python benchmarks/group_lista.py --quick     # a smoke run

Data: D (m x n) Gaussian with unit-norm columns; codes Z (n x T) with exactly k non-zero rows at random
places (Gaussian values: the same k atoms in all T signals); X = D Z + sigma * noise. The error of an estimate
is the NMSE 10 log10(sum ||Z_hat - Z||^2 / sum ||Z||^2) over a fixed test set. Networks, compiled by dpc
from examples/group_lista.dp at `unroll` = --layers:
  - untrained: group ISTA at the example's lam (0.1);
  - group ISTA and group FISTA (`derive fista` on the same program), each at its best lam on validation
    data at this depth (a grid);
  - trained group LISTA (`learn weights untied`), starting from group ISTA at its best lam.
Trained with Adam on the squared error of the last layer's code, fresh samples every step, one torch thread.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from perf_common import machine_line  # noqa: E402

GROUP = (ROOT / "examples" / "group_lista.dp").read_text()
PLAIN = GROUP.replace("learn  weights untied", "#")


def dictionary(m, n, seed):
    D = np.random.default_rng(seed).standard_normal((m, n))
    return D / np.linalg.norm(D, axis=0)


def samples(count, D, T, k, sigma, rng):
    n = D.shape[1]
    Z = np.zeros((count, n, T))
    for code in Z:
        code[rng.choice(n, size=k, replace=False)] = rng.standard_normal((k, T))
    return D @ Z + sigma * rng.standard_normal((count, D.shape[0], T)), Z


def nmse_db(estimate, truth):
    return float(10 * np.log10(np.sum((estimate - truth) ** 2) / np.sum(truth ** 2)))


def per_layer(net, X, Z):
    import torch
    with torch.no_grad():
        return [nmse_db(layer.numpy(), Z) for layer in net(torch.tensor(X), trace=True)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=32)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--T", type=int, default=8)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--sigma", type=float, default=0.01)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="group_lista_nmse.png", help="where to save the plot ('' for none)")
    parser.add_argument("--quick", action="store_true", help="a smoke run (60 steps)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = 60
    import torch

    from dpc.api import compile_source
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(args.seed)
    D = dictionary(args.m, args.n, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    X_test, Z_test = samples(1000, D, args.T, args.k, args.sigma, rng)
    X_val, Z_val = samples(300, D, args.T, args.k, args.sigma, rng)
    overrides = {"unroll": str(args.layers)}
    ISTA, FISTA, LISTA = (_exec(compile_source(text, name, overrides)) for text, name in (
        (PLAIN, "group_ista.dp"), (PLAIN.replace("derive proxgrad", "derive fista"), "group_fista.dp"),
        (GROUP, "group_lista.dp")))
    Dt = torch.tensor(D)
    kwargs = {"D": Dt, "T": args.T}
    lams = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2]
    best = {}
    for label, Net in (("ISTA", ISTA), ("FISTA", FISTA)):
        best[label] = min(lams, key=lambda lam: per_layer(Net(lam=lam, **kwargs), X_val, Z_val)[-1])
    rows = {
        "untrained (lam 0.1)": per_layer(LISTA(lam=0.1, **kwargs), X_test, Z_test),
        f"group ISTA (lam {best['ISTA']})": per_layer(ISTA(lam=best["ISTA"], **kwargs), X_test, Z_test),
        f"group FISTA (lam {best['FISTA']})": per_layer(FISTA(lam=best["FISTA"], **kwargs), X_test, Z_test),
    }
    net = LISTA(lam=best["ISTA"], **kwargs)
    assert np.allclose(per_layer(net, X_test, Z_test), rows[f"group ISTA (lam {best['ISTA']})"])
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr)
    train_rng = np.random.default_rng(args.seed + 2)
    start = time.perf_counter()
    for step in range(args.steps):
        X, Z = (torch.tensor(a) for a in samples(args.batch, D, args.T, args.k, args.sigma, train_rng))
        loss = (net(X) - Z).square().sum((-2, -1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % max(args.steps // 4, 1) == 0:
            print(f"  group LISTA: step {step + 1}/{args.steps}, loss {loss.item():.4g}", flush=True)
    seconds = time.perf_counter() - start
    rows["trained group LISTA"] = per_layer(net, X_test, Z_test)

    print()
    print(f"# group LISTA, m={args.m}, n={args.n}, T={args.T}, k={args.k} active rows, sigma={args.sigma}, "
          f"{args.layers} layers, {args.steps} Adam steps (batch {args.batch}, lr {args.lr}); lam of ISTA/FISTA "
          f"best on validation at layer {args.layers}; test NMSE (dB), 1000 samples")
    print(f"# {machine_line()}")
    labels = list(rows)
    print("| layer | " + " | ".join(labels) + " |")
    print("| --- |" + " --- |" * len(labels))
    for t in range(args.layers):
        print(f"| {t + 1} | " + " | ".join(f"{rows[name][t]:.2f}" for name in labels) + " |")
    print(f"# trained group LISTA: {seconds:.0f} s of training")
    last = {name: rows[name][-1] for name in labels}
    others = min(v for name, v in last.items() if name != "trained group LISTA")
    print(f"# at layer {args.layers}: trained group LISTA {last['trained group LISTA']:.2f} dB, the best other "
          f"{others:.2f} dB")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for name in labels:
            ax.plot(range(1, args.layers + 1), rows[name], marker="o", label=name)
        ax.set_xlabel("layer")
        ax.set_ylabel("test NMSE (dB)")
        ax.set_title("group-sparse coding")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    return 0


def _exec(source):
    import inspect

    import torch
    namespace = {"__name__": "group_lista_generated"}
    exec(compile(source, "group_lista.dp", "exec"), namespace)
    cls = next(v for v in namespace.values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
               and v.__module__ == "group_lista_generated")
    taken = inspect.signature(cls).parameters  # T only if the constructor takes it (it may come with X)
    return lambda **kwargs: cls(**{k: v for k, v in kwargs.items() if k in taken or k != "T"})


if __name__ == "__main__":
    sys.exit(main())
