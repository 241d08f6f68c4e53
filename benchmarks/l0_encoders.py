"""Deep l0 encoders (Wang, Ling & Huang, AAAI 2016) trained on synthetic k-sparse codes, against iterative
hard thresholding at the same depth. Measures; asserts nothing.

    python benchmarks/l0_encoders.py                 # 2000 Adam steps per network
    python benchmarks/l0_encoders.py --quick         # a smoke run

Data: D (m x n) Gaussian with unit-norm columns; codes with exactly k non-zeros at random places, Gaussian
values; x = D z (noiseless). The error of an estimate is the NMSE 10 log10(||z_hat - z||^2 / ||z||^2),
averaged over a fixed test set. Networks, compiled by dpc from examples/:
  - examples/iht.dp: the M-sparse encoder, topk(W_t x + S_t z, k) per layer, k the true sparsity;
  - examples/l0_encoder.dp: the l0-regularised encoder, hard(W_t x + S_t z, theta_t), lam chosen for IHT on
    the training data from a grid;
  - each untrained (IHT itself, with the same k or lam) at the same depth.
Trained with Adam on the MSE of the last layer's code, fresh samples every step, one torch thread.
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


def problem(m, n, seed):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((m, n))
    return D / np.linalg.norm(D, axis=0)


def codes(count, n, k, rng):
    z = np.zeros((count, n))
    for row in z:
        row[rng.choice(n, size=k, replace=False)] = rng.standard_normal(k)
    return z


def nmse_db(estimate, truth):
    return float(10 * np.log10(np.mean(np.sum((estimate - truth) ** 2, 1) / np.sum(truth ** 2, 1))))


def per_layer(net, x, z):
    import torch
    with torch.no_grad():
        return [nmse_db(layer.numpy(), z) for layer in net(torch.tensor(x), trace=True)]


def train(net, D, k, steps, batch, lr, seed, label):
    import torch
    rng = np.random.default_rng(seed)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    start = time.perf_counter()
    for step in range(steps):
        z = codes(batch, D.shape[1], k, rng)
        x = torch.tensor(z @ D.T)
        loss = (net(x) - torch.tensor(z)).square().sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % max(steps // 4, 1) == 0:
            print(f"  {label}: step {step + 1}/{steps}, loss {loss.item():.4g}", flush=True)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=64)
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smoke run (60 steps, small sizes)")
    args = parser.parse_args(argv)
    if args.quick:
        args.m, args.n, args.steps = 20, 40, 60
    import torch

    import dpc
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    D = problem(args.m, args.n, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    z_test = codes(1000, args.n, args.k, rng)
    x_test = z_test @ D.T
    z_val = codes(500, args.n, args.k, rng)
    x_val = z_val @ D.T
    overrides = {"unroll": str(args.layers)}
    IHT = dpc.load(ROOT / "examples" / "iht.dp", overrides=overrides)
    L0 = dpc.load(ROOT / "examples" / "l0_encoder.dp", overrides=overrides)
    Dt = torch.tensor(D)

    # lam for the penalty form: the best IHT on validation data at this depth
    lams = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    lam = min(lams, key=lambda lam_: per_layer(L0(D=Dt, lam=lam_), x_val, z_val)[-1])
    rows = {}
    times = {}
    for label, Net, kwargs in (("IHT (sparse k)", IHT, {"k": float(args.k)}), ("IHT (l0, lam)", L0, {"lam": lam})):
        net = Net(D=Dt, **kwargs)
        rows[label] = per_layer(net, x_test, z_test)
        trained = f"trained {'M-sparse' if Net is IHT else 'l0'} encoder"
        times[trained] = train(net, D, args.k, args.steps, args.batch, args.lr, args.seed + 2, trained)
        rows[trained] = per_layer(net, x_test, z_test)

    print()
    print(f"# deep l0 encoders, m={args.m}, n={args.n}, k={args.k}, {args.layers} layers, {args.steps} Adam steps "
          f"(batch {args.batch}, lr {args.lr}), lam = {lam} (best IHT on validation); test NMSE (dB), 1000 codes")
    print(f"# {machine_line()}")
    labels = list(rows)
    print("| layer | " + " | ".join(labels) + " |")
    print("| --- |" + " --- |" * len(labels))
    for t in range(args.layers):
        print(f"| {t + 1} | " + " | ".join(f"{rows[name][t]:.2f}" for name in labels) + " |")
    for name, seconds in times.items():
        print(f"# {name}: {seconds:.0f} s of training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
