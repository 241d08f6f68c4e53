"""ADMM-Net and a learned PDHG for 1-D total-variation denoising, trained on the CPU: test error (dB) per layer
against the untrained algorithm with the same number of iterations. Measures; asserts nothing.

    python benchmarks/tv1d_learned.py            # 1000 Adam steps per network
    python benchmarks/tv1d_learned.py --quick    # a smoke run

Data: piecewise-constant signals of length n (a random number of jumps, Gaussian levels) plus white noise;
the error of an estimate z of the clean signal c is 10 log10(||z - c||^2 / ||c||^2), averaged over the test
set. Networks, compiled from the programs below by dpc:
  - ADMM-Net (examples/admm_net.dp): ADMM unrolled T times with one learned penalty rho per layer, and a
    learned regularisation weight lam per layer;
  - learned PDHG: Chambolle-Pock unrolled T times with learned steps tau, sigma and weight lam per layer;
  - the same two untrained (rho = 1; tau = sigma = 0.99/opnorm(Dd)), lam chosen on the training set from a
    grid, i.e. the classical algorithm stopped after T iterations with its best fixed parameter.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from perf_common import machine_line  # noqa: E402

ADMM = """network ADMMNet
dims n, p
input x : R[n]
param Dd : R[p, n]
hyper lam = {lam}
hyper rho = 1
var z : R[n] = 0
minimize 0.5 * sqnorm(z - x) + lam * norm1(Dd @ z)
derive admm(rho = rho)
unroll {T}
{learn}
"""

PDHG = """network LearnedPDHG
dims n, p
input x : R[n]
param Dd : R[p, n]
hyper lam = {lam}
hyper tau = {step}
hyper sigma = {step}
var z : R[n] = 0
minimize 0.5 * sqnorm(z - x) + lam * norm1(Dd @ z)
derive pdhg(tau = tau, sigma = sigma)
unroll {T}
{learn}
"""


def signals(count, n, noise, rng):
    clean = np.zeros((count, n))
    for row in clean:
        jumps = np.sort(rng.choice(np.arange(1, n), size=rng.integers(2, 8), replace=False))
        for start, stop in zip(np.r_[0, jumps], np.r_[jumps, n]):
            row[start:stop] = rng.standard_normal()
    return clean, clean + noise * rng.standard_normal(clean.shape)


def error_db(z, clean):
    return float(np.mean(10 * np.log10(((z - clean) ** 2).sum(-1) / (clean ** 2).sum(-1))))


def build(text):
    import torch
    from dpc.api import compile_source
    namespace = {"__name__": "tv1d_generated"}
    exec(compile(compile_source(text, "tv1d.dp"), "tv1d.dp", "exec"), namespace)
    return next(v for v in namespace.values()
                if isinstance(v, type) and v.__module__ == "tv1d_generated" and issubclass(v, torch.nn.Module))


def per_layer_db(net, x, clean):
    import torch
    with torch.no_grad():
        return [error_db(z.numpy(), clean) for z in net(torch.tensor(x), trace=True)]


def train(net, x, clean, steps, batch, lr, rng):
    """Adam on the squared error to the clean signals summed over the layers, `steps` minibatches of `batch`
    (a count, not a time: the result does not depend on the machine's load)."""
    import torch
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    xt, ct = torch.tensor(x), torch.tensor(clean)
    try:
        from tqdm import tqdm
        steps_iter = tqdm(range(steps), desc=type(net).__name__, leave=False, mininterval=2.0)
    except ImportError:
        steps_iter = range(steps)
    for _ in steps_iter:
        idx = torch.as_tensor(rng.choice(len(x), batch, replace=False))
        # every layer's error, so each depth is a denoiser of its own (as in the LISTA family's training)
        loss = sum(((z - ct[idx]) ** 2).sum(-1).mean() for z in net(xt[idx], trace=True))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps


def main(argv=None):
    import torch
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--noise", type=float, default=0.3)
    ap.add_argument("--steps", type=int, default=1000, help="Adam steps per network")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.layers = 20, 4
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n, T = args.n, args.layers
    Dd = torch.tensor(np.diff(np.eye(n), axis=0))
    clean, x = signals(2000, n, args.noise, rng)
    clean_test, x_test = signals(500, n, args.noise, rng)
    step = round(0.99 / float(torch.linalg.matrix_norm(Dd, 2)), 6)

    def best_lam(template, **fmt):  # the classical algorithm's best fixed lam on the training set
        best = None
        for lam in (0.05, 0.1, 0.2, 0.3, 0.5, 0.8):
            net = build(template.format(lam=lam, T=T, learn="", **fmt))(Dd=Dd)
            db = per_layer_db(net, x[:500], clean[:500])[-1]
            best = min(best or (db, lam), (db, lam))
        return best[1]

    print(machine_line())
    rows = {}
    for label, template, fmt, learn in (
            ("ADMM", ADMM, {}, "learn rho, lam untied"),
            ("PDHG", PDHG, {"step": step}, "learn tau, sigma, lam untied")):
        lam = best_lam(template, **fmt)
        classic = build(template.format(lam=lam, T=T, learn="", **fmt))(Dd=Dd)
        rows[f"{label} (lam = {lam})"] = per_layer_db(classic, x_test, clean_test)
        learned = build(template.format(lam=lam, T=T, learn=learn, **fmt))(Dd=Dd)
        start = time.time()
        count = train(learned, x, clean, args.steps, 64, args.lr, rng)
        rows[f"learned {label}"] = per_layer_db(learned, x_test, clean_test)
        print(f"learned {label}: {count} Adam steps in {time.time() - start:.0f} s ({learn})")
    names = list(rows)
    print(f"\ntest error (dB) per layer, n = {n}, noise {args.noise}, 500 test signals")
    print("layer " + "".join(f"{name:>22}" for name in names))
    for k in range(T):
        print(f"{k + 1:5d} " + "".join(f"{rows[name][k]:22.2f}" for name in names))


if __name__ == "__main__":
    main()
