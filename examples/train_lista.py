"""Train LISTA compiled by dpc from lista.dp and compare it with ISTA and FISTA.

The problem is the synthetic sparse coding benchmark of Chen et al. (2018):
a 250 x 500 Gaussian dictionary with unit-norm columns, codes that are
Bernoulli(0.1) * N(0, 1), measurements y = A x (optionally noisy); see
sparse_coding.py.  The script

1. compiles examples/lista.dp with `dpc.load` into an nn.Module class;
2. instantiates it from the dictionary: untrained, it *is* ISTA (checked);
3. trains it (end-to-end by default, or layer-wise with --layerwise);
4. prints the test NMSE (dB) of every layer for ISTA, FISTA and LISTA.

ISTA and FISTA are shown at the LISTA initialisation's lam and, as a stronger
baseline, at the lam from a small grid that is best at the last layer on the
validation set.

    python examples/train_lista.py              # about 3.5 minutes on 2 CPU cores
    python examples/train_lista.py --quick      # about 30 seconds
    python examples/train_lista.py --layerwise --iters 300 --snr 20
    python examples/train_lista.py --device cuda --iters 8000

Measured (noiseless, seed 0, float32, layer 16, test NMSE): ISTA -5.8 dB and
FISTA -7.6 dB at lam 0.4, FISTA -10.9 dB at its best lam (0.2); LISTA -18.5 dB
with the defaults (1500 steps), -20.9 dB with --iters 3000, -25.8 dB with 8000.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # sparse_coding.py lives beside this script
import sparse_coding as sc  # noqa: E402

LAM_GRID = (0.025, 0.05, 0.1, 0.2, 0.4, 0.8)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=16, help="depth T of LISTA and of the baselines")
    ap.add_argument("--steps", "--iters", dest="iters", type=int, default=None,
                    help="training steps (end-to-end; default 1500, 200 with --quick) or the "
                         "iteration cap per stage (--layerwise; default 100, 25 with --quick)")
    ap.add_argument("--batch", type=int, default=None,
                    help="training batch size (default 256 end-to-end, 64 layer-wise)")
    ap.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (first stage)")
    ap.add_argument("--lam", type=float, default=0.4,
                    help="LASSO weight for the ISTA/FISTA baselines and LISTA's initial thresholds")
    ap.add_argument("--loss", choices=("all", "last"), default="all",
                    help="end-to-end loss: mean MSE over all layers (deep supervision) or the "
                         "last layer's MSE only")
    ap.add_argument("--layerwise", action="store_true",
                    help="LISTA-CPSS layer-wise schedule instead of end-to-end training")
    ap.add_argument("--patience", type=int, default=4,
                    help="--layerwise: validation checks without improvement before a stage ends")
    ap.add_argument("--snr", type=float, default=None, help="measurement SNR in dB (default: noiseless)")
    ap.add_argument("--m", type=int, default=250, help="measurements")
    ap.add_argument("--n", type=int, default=500, help="code size (dictionary atoms)")
    ap.add_argument("--p", type=float, default=0.1, help="probability that a code entry is non-zero")
    ap.add_argument("--seed", type=int, default=0, help="seed of the dictionary, data sets and training")
    ap.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: the cores this process may use)")
    ap.add_argument("--quick", action="store_true", help="a smaller run that finishes in under a minute")
    ap.add_argument("--save", type=Path, default=None, help="save the trained state_dict here")
    args = ap.parse_args(argv)
    # Defaults measured on 2 CPU cores (float32): end-to-end with deep supervision at
    # batch 256 gave the best NMSE per second; small batches are limited by gradient
    # noise, and the layer-wise schedule needs far more iterations than fit in minutes.
    if args.iters is None:
        args.iters = (25 if args.quick else 100) if args.layerwise else (200 if args.quick else 1500)
    if args.batch is None:
        args.batch = 64 if args.layerwise else 256
    return args


def setup(args):
    """Seed everything and make the run reproducible on the chosen device."""
    # cuBLAS needs this before its first call to be deterministic.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if args.threads:
        threads = args.threads
    elif hasattr(os, "sched_getaffinity"):  # the cores we may run on, not the machine's
        threads = len(os.sched_getaffinity(0))
    else:
        threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return threads


def load_lista():
    """The nn.Module class that dpc compiles from lista.dp (beside this script)."""
    import dpc
    return dpc.load(str(HERE / "lista.dp"))


def baseline_curves(problem, lam, T):
    """Per-layer test NMSE of ISTA and FISTA at a given lam."""
    y, x = problem.test
    return {name: [sc.nmse_db(z, x) for z in method(problem.A, y, lam, T)]
            for name, method in (("ISTA", sc.ista), ("FISTA", sc.fista))}


def best_lam(problem, method, T):
    """The lam of LAM_GRID whose T-th iterate has the lowest validation NMSE."""
    y, x = problem.val
    return min(LAM_GRID, key=lambda lam: sc.nmse_db(method(problem.A, y, lam, T)[-1], x))


def train(net, problem, args):
    if args.layerwise:
        return sc.train_layerwise(net, problem, lr=args.lr, batch=args.batch, max_iters=args.iters,
                                  patience=args.patience, check_every=25)
    return sc.train_end_to_end(net, problem, steps=args.iters, lr=args.lr, batch=args.batch,
                               deep_supervision=args.loss == "all",
                               val_every=max(25, args.iters // 20))


def print_table(columns, title):
    """One row per layer, one column per method; the best value of each row is starred."""
    names = list(columns)
    width = max(12, *(len(n) + 1 for n in names))
    print(title)
    print("layer" + "".join(f"{n:>{width}}" for n in names))
    for k in range(len(next(iter(columns.values())))):
        row = [columns[n][k] for n in names]
        best = min(row)
        cells = "".join(f"{v:>{width - 1}.2f}" + ("*" if v == best else " ") for v in row)
        print(f"{k + 1:5d}" + cells)


def main(argv=None):
    t_start = time.perf_counter()
    args = parse_args(argv)
    threads = setup(args)
    device = torch.device(args.device)
    n_eval = 500 if args.quick else 1000
    problem = sc.make_problem(m=args.m, n=args.n, p=args.p, snr_db=args.snr, seed=args.seed,
                              n_val=n_eval, n_test=n_eval, dtype=torch.float32, device=device)
    noise = "noiseless" if args.snr is None else f"SNR {args.snr:g} dB"
    print(f"problem: m={args.m} n={args.n} p={args.p} {noise}; {n_eval} val / {n_eval} test samples; "
          f"device {device}, {threads} threads, torch {torch.__version__}")

    LISTA = load_lista()
    net = LISTA(D=problem.A, lam=args.lam, steps=args.layers)
    learned = sum(p.numel() for p in net.parameters() if p.requires_grad)
    curves = {f"{k}({args.lam:g})": v for k, v in baseline_curves(problem, args.lam, args.layers).items()}

    # The compiled network starts as ISTA: a cheap end-to-end check of dpc's output.
    y, x = problem.test
    with torch.no_grad():
        gap = max((a - b).abs().max().item() for a, b in
                  zip(net(y, trace=True), sc.ista(problem.A, y, args.lam, args.layers)))
    print(f"{LISTA.__name__}: {learned:,} learned numbers; untrained vs ISTA: max |diff| {gap:.1e}")

    tuned = []
    for name, method in (("ISTA", sc.ista), ("FISTA", sc.fista)):
        lam = best_lam(problem, method, args.layers)
        tuned.append(f"{name} {lam:g}")
        if lam != args.lam:  # the tuned baseline differs from the one already shown
            curves[f"{name}({lam:g})"] = baseline_curves(problem, lam, args.layers)[name]
    print(f"lam best at layer {args.layers} on validation, from {LAM_GRID}: {', '.join(tuned)}")

    how = (f"layer-wise, <= {args.iters} iters/stage" if args.layerwise
           else f"end-to-end, {args.iters} steps")
    print(f"training LISTA ({how}, batch {args.batch}, lr {args.lr:g})", flush=True)
    start = time.perf_counter()
    train(net, problem, args)
    seconds = time.perf_counter() - start
    curves["LISTA"] = sc.nmse_per_layer(net, y, x)
    print(f"trained in {seconds:.0f} s; total wall time {time.perf_counter() - t_start:.0f} s\n")
    print_table(curves, f"test NMSE (dB) per layer, {noise}; NAME(lam); * = best of the row")
    if args.save:
        torch.save(net.state_dict(), args.save)
        print(f"saved {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
