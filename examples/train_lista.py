"""Train LISTA compiled by dpc from lista.dp and compare it with ISTA and FISTA.

The problem is the synthetic sparse coding benchmark of Chen et al. (2018):
a 250 x 500 Gaussian dictionary with unit-norm columns, codes that are
Bernoulli(0.1) * N(0, 1), measurements y = A x (optionally noisy); see
sparse_coding.py.  The script

1. compiles examples/lista.dp with `dpc.load` into an nn.Module class;
2. instantiates it from the dictionary: untrained, it *is* ISTA (checked);
3. trains it (end-to-end by default, or layer-wise with --layerwise);
4. prints the test NMSE (dB) of every layer for ISTA, FISTA and LISTA and
   saves the same curves as a PNG (--plot).

ISTA and FISTA are shown at the LISTA initialisation's lam and, as a stronger
baseline, at the lam from a small grid that is best at the last layer on the
validation set.

    python examples/train_lista.py              # 300 steps, 52 s of CPU time (wall times: README.md)
    python examples/train_lista.py --long       # 1500 steps, a better LISTA (about 3.5 min on 2 cores)
    python examples/train_lista.py --smoke      # a small problem, seconds (the tests run it)
    python examples/train_lista.py --layerwise --iters 300 --snr 20
    python examples/train_lista.py --device cuda --iters 8000

Threads: torch's OpenMP threads spin-wait on each other, so on cores that
another job also uses, two threads are several times slower than one (measured
0.29 s per training step with 1 thread and 1.0 s with 2 on 2 cores busy with
other jobs). The default is therefore one thread per core that the load average
says is idle, at least one (--threads overrides).

Measured (noiseless, seed 0, float32, layer 16, test NMSE): ISTA -5.8 dB and
FISTA -7.6 dB at lam 0.4, FISTA -10.9 dB at its best lam (0.2); LISTA -13.0 dB
after 300 steps (the default), -18.5 dB after 1500 (--long), -20.9 dB with
--iters 3000, -25.8 dB with 8000. Wall times are in README.md.
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
                    help="training steps (end-to-end; default 300, 1500 with --long) or the "
                         "iteration cap per stage (--layerwise; default 100, 400 with --long)")
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
                    help="torch CPU threads (default: the idle cores this process may use, at least 1)")
    length = ap.add_mutually_exclusive_group()
    length.add_argument("--long", action="store_true", help="1500 training steps: a better LISTA, a few minutes")
    length.add_argument("--smoke", action="store_true",
                        help="a 50 x 100 problem, 4 layers, 20 steps: checks that everything runs, in seconds")
    ap.add_argument("--plot", type=Path, default=Path("lista_nmse.png"),
                    help="where to save the NMSE-per-layer plot (PNG; default lista_nmse.png; '' for none)")
    ap.add_argument("--save", type=Path, default=None, help="save the trained state_dict here")
    args = ap.parse_args(argv)
    # Defaults measured on 2 CPU cores (float32): end-to-end with deep supervision at
    # batch 256 gave the best NMSE per second (lr 1e-3 was no better than 5e-4 at 300
    # steps); small batches are limited by gradient noise, and the layer-wise schedule
    # needs far more iterations than fit in minutes.
    if args.smoke:
        args.m, args.n, args.layers = 50, 100, 4
    if args.iters is None:
        if args.layerwise:
            args.iters = 5 if args.smoke else 400 if args.long else 100
        else:
            args.iters = 20 if args.smoke else 1500 if args.long else 300
    if args.batch is None:
        args.batch = 64 if args.layerwise else 256
    if str(args.plot) in ("", "."):
        args.plot = None
    return args


def choose_threads(requested=None):
    """torch's thread count and why: `requested`, else one per core that is idle now.

    OpenMP threads spin-wait for each other at every parallel region; when another job
    holds a core, each region waits for a thread that is not running, and 2 threads on
    2 busy cores measured 3.4x slower per step than 1 thread. The 1-minute load average
    counts the runnable jobs, so cores minus load is the cores free for us.
    """
    if requested:
        return requested, "--threads"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows has no load average
        return cores, f"{cores} cores"
    threads = max(1, min(cores, int(cores - load + 0.5)))
    return threads, f"{cores} cores, load average {load:.1f}"


def setup(args):
    """Seed everything and make the run reproducible on the chosen device."""
    # cuBLAS needs this before its first call to be deterministic.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    threads, why = choose_threads(args.threads)
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return f"{threads} thread{'s' if threads > 1 else ''} ({why})"


def load_lista():
    """The nn.Module class that dpc compiles from lista.dp (beside this script)."""
    import dpc
    return dpc.load(str(HERE / "lista.dp"))


def baseline_curves(problem, lam, T):
    """Per-layer test NMSE of ISTA and FISTA at a given lam."""
    y, x = problem.test
    return {name: [sc.nmse_db(z, x) for z in method(problem.A, y, lam, T)]
            for name, method in (("ISTA", sc.ista), ("FISTA", sc.fista))}


def best_lams(problem, T):
    """{method name: the lam of LAM_GRID whose T-th iterate has the lowest validation NMSE}."""
    y, x = problem.val
    methods = (("ISTA", sc.ista), ("FISTA", sc.fista))
    runs = [(name, method, lam) for name, method in methods for lam in LAM_GRID]
    scores = {}
    for name, method, lam in progress(runs, "lam search"):
        scores[name, lam] = sc.nmse_db(method(problem.A, y, lam, T)[-1], x)
    return {name: min(LAM_GRID, key=lambda lam: scores[name, lam]) for name, _ in methods}


def progress(items, desc):
    """A tqdm bar with ETA on a terminal (tqdm is in the `examples` extra); the items unchanged otherwise."""
    if sc.tqdm is None or not sys.stderr.isatty():
        return items
    return sc.tqdm(items, desc=desc, leave=False, dynamic_ncols=True)


def train(net, problem, args):
    if args.layerwise:
        return sc.train_layerwise(net, problem, lr=args.lr, batch=args.batch, max_iters=args.iters,
                                  patience=args.patience, check_every=25)
    return sc.train_end_to_end(net, problem, steps=args.iters, lr=args.lr, batch=args.batch,
                               deep_supervision=args.loss == "all",
                               val_every=max(25, args.iters // 20))


def save_plot(columns, path, title):
    """NMSE per layer, one line per method, as a PNG (matplotlib's Agg backend: no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, curve in columns.items():
        ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3,
                linewidth=2.2 if name == "LISTA" else 1.2, label=name)
    ax.set_xlabel("layer (iteration)")
    ax.set_ylabel("test NMSE (dB)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def verdict(columns):
    """One line: at how many layers LISTA is below every baseline, and its margin at the last layer."""
    lista = columns["LISTA"]
    others = [c for n, c in columns.items() if n != "LISTA"]
    below = sum(all(v < c[k] for c in others) for k, v in enumerate(lista))
    best_name = min((n for n in columns if n != "LISTA"), key=lambda n: columns[n][-1])
    return (f"LISTA is below ISTA and FISTA at {below} of {len(lista)} layers; at layer {len(lista)} it is "
            f"{columns[best_name][-1] - lista[-1]:.1f} dB below the best baseline, {best_name}")


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
    n_eval = 200 if args.smoke else 1000
    problem = sc.make_problem(m=args.m, n=args.n, p=args.p, snr_db=args.snr, seed=args.seed,
                              n_val=n_eval, n_test=n_eval, dtype=torch.float32, device=device)
    noise = "noiseless" if args.snr is None else f"SNR {args.snr:g} dB"
    print(f"problem: m={args.m} n={args.n} p={args.p} {noise}; {n_eval} val / {n_eval} test samples; "
          f"device {device}, {threads}, torch {torch.__version__}", flush=True)

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

    print(f"lam search for ISTA and FISTA: {len(LAM_GRID)} values each, best at layer {args.layers} "
          "on validation ...", flush=True)
    tuned = best_lams(problem, args.layers)
    for name, lam in tuned.items():
        if lam != args.lam:  # the tuned baseline differs from the one already shown
            curves[f"{name}({lam:g})"] = baseline_curves(problem, lam, args.layers)[name]
    print(f"lam from {LAM_GRID}: " + ", ".join(f"{name} {lam:g}" for name, lam in tuned.items()))

    how = (f"layer-wise, <= {args.iters} iters/stage" if args.layerwise
           else f"end-to-end, {args.iters} steps")
    print(f"training LISTA ({how}, batch {args.batch}, lr {args.lr:g})", flush=True)
    start = time.perf_counter()
    train(net, problem, args)
    seconds = time.perf_counter() - start
    curves["LISTA"] = sc.nmse_per_layer(net, y, x)
    print(f"trained in {seconds:.0f} s; total wall time {time.perf_counter() - t_start:.0f} s\n")
    title = f"test NMSE (dB) per layer, {noise}; NAME(lam); * = best of the row"
    print_table(curves, title)
    print(verdict(curves))
    if args.plot:
        save_plot(curves, args.plot, f"LISTA vs ISTA/FISTA, m={args.m} n={args.n}, {how}")
        print(f"plot: {args.plot}")
    if args.save:
        torch.save(net.state_dict(), args.save)
        print(f"saved {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
