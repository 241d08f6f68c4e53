"""Accuracy against time: trained LISTA, LISTA-CPSS and ALISTA (compiled by dpc) against the front of
ISTA-N and FISTA-N, N up to 4096, on noiseless sparse coding.

The problem, for each size m x n (default 50x100 and 100x200, the sizes of benchmarks/peers.py):
    x = A z0,  A (m, n) Gaussian with unit-norm columns,  z0 ~ Bernoulli(0.1) * N(0, 1)
(Chen et al. 2018's setting, from examples/sparse_coding.make_problem: fixed test set of --test samples,
fixed validation set, fresh training batches). Every method maps x to an estimate z of z0 and is scored
by the same NMSE against the TRUE code z0, pooled over the test set:
    10 log10(sum ||z - z0||^2 / sum ||z0||^2)                       (examples/sparse_coding.nmse_db)
This is the networks' training target, and the one the LISTA-family numbers of docs/lista_family.md use.

ISTA and FISTA solve the LASSO 0.5||A z - x||^2 + lam ||z||_1 from z = 0 (benchmarks/peers.Iterative,
their cheapest form: one (batch, n) x (n, n) product per iteration). A LASSO solution is biased away from
z0 by lam, so each is run for every lam of a grid (--lams) and its front takes, at every N, the best NMSE
over the grid: "best lam for the target", chosen on the test set itself (in the classical methods' favour).
A network "needs FISTA-N" when N is the fewest iterations at which some lam of the grid reaches the
network's test NMSE; the time ratio is FISTA-N's forward time over the network's, at the same batch.

Networks: examples/lista.dp, lista_cpss.dp, alista.dp, 16 layers, thresholds starting at --net-lam / L,
trained layer-wise with benchmarks/sparse_coding.train_layerwise (LISTA-CPSS's schedule, Adam, batches
of 64) within --budget seconds per network and size; the state_dicts go to OUT/<m>x<n>_<net>.pt and
--reuse loads them instead of training. Timing: forward only under torch.no_grad, float32, median of
single calls (benchmarks/perf_common.time_call, as peers.py), batches 1, 32, 128.

    python benchmarks/front.py                  # full run, about 10 minutes on 2 loaded CPU cores
    python benchmarks/front.py --reuse          # skip training: load runs/front/*.pt
    python benchmarks/front.py --quick          # smoke run, seconds

Writes OUT/front.md (tables), OUT/front.json and the plot (--plot, default OUT/front.png). Measures and
reports; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from perf_common import (  # noqa: E402
    ROOT, floats, fmt_ms, ints, load_path, machine_line, parse_sizes, sparse_coding, time_call,
)

sc = sparse_coding()
peers = load_path(ROOT / "benchmarks" / "peers.py", "front_peers")                   # Iterative, nmse_curve
layerwise = load_path(ROOT / "benchmarks" / "sparse_coding.py", "front_sparse_coding")  # train_layerwise

NETWORKS = {"LISTA": "lista.dp", "LISTA-CPSS": "lista_cpss.dp", "ALISTA": "alista.dp"}
BUDGET = {"LISTA": 30.0, "LISTA-CPSS": 50.0, "ALISTA": 90.0}  # seconds per size in the default run
LAMS = (0.4, 0.1, 0.03, 0.01, 3e-3, 1e-3, 3e-4, 1e-4)
FAMILIES = ("ISTA", "FISTA")


# ------------------------------------------------------------------ classical fronts

def classical_curves(A, X, Z, lams, cap, log):
    """{family: {lam: [NMSE (dB) after 1..cap iterations]}} on the set (X, Z), float32."""
    curves = {}
    for fam in FAMILIES:
        curves[fam] = {}
        for lam in lams:
            method = peers.Iterative(A, lam, fast=fam == "FISTA")
            curves[fam][lam] = peers.nmse_curve(method, X, Z, cap)
    return curves


def best_over_lams(per_lam):
    """([best NMSE at N = 1..cap], [the lam giving it])."""
    lams = list(per_lam)
    cap = len(per_lam[lams[0]])
    best, arg = [], []
    for k in range(cap):
        lam = min(lams, key=lambda v: per_lam[v][k])
        best.append(per_lam[lam][k])
        arg.append(lam)
    return best, arg


def iterations_to_reach(per_lam, target):
    """(N, lam): the fewest iterations at which some lam of the grid reaches `target` dB; (None, None) if
    none does within the cap."""
    found = [(next((k + 1 for k, v in enumerate(c) if v <= target), math.inf), lam) for lam, c in per_lam.items()]
    N, lam = min(found)
    return (None, None) if N == math.inf else (N, lam)


# ------------------------------------------------------------------ networks

def trained_network(name, cls, problem, args, size, log):
    """The network for this size: loaded from OUT (--reuse, when saved) or trained and saved."""
    torch.manual_seed(args.seed)
    net = cls(D=problem.A, lam=args.net_lam, steps=args.layers)
    path = args.out / f"{size}_{name}.pt"
    info_path = path.with_suffix(".json")
    if args.reuse and path.exists() and info_path.exists():
        net.load_state_dict(torch.load(path))
        info = json.loads(info_path.read_text())
        log(f"  {name}: loaded {path.name} (trained {info['seconds']} s, {info['iterations']} Adam steps)")
        return net, info
    per_layer = layerwise.per_layer_parameters(cls, net, problem.A, args.net_lam)
    cfg = dict(iters=args.stage_iters, check_every=args.check_every, patience=args.patience)
    log(f"  {name}: training layer-wise for at most {args.budget[name]:g} s")
    iterations, seconds = layerwise.train_layerwise(net, per_layer, problem, cfg, args.budget[name],
                                                    lambda text: args.verbose and log(text))
    info = dict(iterations=iterations, seconds=round(seconds, 1), budget=args.budget[name],
                parameters=sum(p.numel() for p in net.parameters() if p.requires_grad))
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    info_path.write_text(json.dumps(info))
    return net, info


# ------------------------------------------------------------------ one size

def run_size(m, n, args, classes, log):
    size = f"{m}x{n}"
    problem = sc.make_problem(m=m, n=n, p=0.1, snr_db=None, seed=args.seed, n_val=args.val, n_test=args.test,
                              dtype=torch.float32)
    A = problem.A
    X, Z = problem.test  # (inputs x, true codes z0)
    t0 = time.perf_counter()
    curves = classical_curves(A, X, Z, args.lams, args.cap, log)
    log(f"  ISTA/FISTA NMSE curves, {len(args.lams)} lams x {args.cap} iterations, in "
        f"{time.perf_counter() - t0:.1f} s")
    lam0 = args.lams[len(args.lams) // 2]
    d_f = (peers.Iterative(A, lam0, fast=True)(X[:64], 16) - sc.fista(A, X[:64], lam0, 16)[-1]).abs().max().item()
    log(f"  check: fast FISTA-16 vs examples/sparse_coding.fista (lam {lam0:g}), max |difference| {d_f:.1e}")

    nets = {}  # "ALISTA, 12 layers" -> (callable x -> z, info): every network also run truncated
    for name, cls in classes.items():
        net, trained = trained_network(name, cls, problem, args, size, log)
        net.eval()
        for depth in [d for d in args.depths if d <= args.layers]:
            info = dict(trained, network=name, layers=depth)
            with torch.no_grad():
                info["nmse"] = sc.nmse_db(net(X, steps=depth), Z)
            for fam in FAMILIES:
                info[fam] = dict(zip(("N", "lam"), iterations_to_reach(curves[fam], info["nmse"])))
            log(f"  {name}, {depth} layers: test NMSE {info['nmse']:.2f} dB; FISTA needs N = {info['FISTA']['N']} "
                f"(lam {info['FISTA']['lam']}), ISTA N = {info['ISTA']['N']} (lam {info['ISTA']['lam']})")
            nets[f"{name}, {depth} layers"] = (lambda x, net=net, depth=depth: net(x, steps=depth), info)

    grid = sorted({2 ** k for k in range(int(math.log2(args.cap)) + 1)} | {args.cap})
    timed = {fam: sorted(set(grid) | {i[fam]["N"] for _, i in nets.values() if i[fam]["N"]}) for fam in FAMILIES}
    methods = {fam: peers.Iterative(A, lam0, fast=fam == "FISTA") for fam in FAMILIES}  # time: lam-independent
    times = {"nets": {name: {} for name in nets}, **{fam: {N: {} for N in timed[fam]} for fam in FAMILIES}}
    t0 = time.perf_counter()
    reps = dict(min_time=args.min_time, min_reps=args.min_reps, max_reps=args.max_reps)
    with torch.no_grad():
        for B in args.batches:
            xb = X[:B]
            for name, (net, _) in nets.items():
                times["nets"][name][B] = time_call(lambda: net(xb), **reps)[0]  # net: the callable
            for fam in FAMILIES:
                for N in timed[fam]:
                    times[fam][N][B] = time_call(lambda: methods[fam](xb, N), **reps)[0]
    log(f"  timings in {time.perf_counter() - t0:.1f} s")
    fronts = {}
    for fam in FAMILIES:
        best, arg = best_over_lams(curves[fam])
        fronts[fam] = [dict(N=N, nmse=best[N - 1], lam=arg[N - 1], ms={B: t * 1e3 for B, t in times[fam][N].items()})
                       for N in timed[fam]]
    rows = {}
    for name, (_, info) in nets.items():
        row = dict(info, ms={B: t * 1e3 for B, t in times["nets"][name].items()})
        for fam in FAMILIES:
            N = info[fam]["N"]
            ref = times[fam][N if N else args.cap]
            row[fam] = dict(info[fam], ms={B: t * 1e3 for B, t in ref.items()},
                            ratio={B: ref[B] / times["nets"][name][B] for B in args.batches}, reached=N is not None)
        rows[name] = row
    return dict(size=size, nets=rows, fronts=fronts,
                lam_min_curve={fam: {str(lam): c[-1] for lam, c in curves[fam].items()} for fam in FAMILIES})


# ------------------------------------------------------------------ report

def markdown(results, args, header):
    lines = header + [""]
    for res in results:
        size, rows = res["size"], res["nets"]
        lines += [f"### {size}: trained networks against the FISTA and ISTA that reach their NMSE", "",
                  "Per batch: network ms / FISTA-N ms (FISTA's time over the network's; > 1: the network is faster).",
                  "", "| network | test NMSE (dB) | FISTA-N to reach it (lam) | ISTA-N (lam) | "
                  + " | ".join(f"batch {B}" for B in args.batches) + " |",
                  "| --- | --- | --- | --- |" + " --- |" * len(args.batches)]
        for name, r in rows.items():
            f, i = r["FISTA"], r["ISTA"]
            cells = [name, f"{r['nmse']:.2f}",
                     f"FISTA-{f['N']} ({f['lam']:g})" if f["reached"] else f"none in {args.cap} (any lam)",
                     f"ISTA-{i['N']} ({i['lam']:g})" if i["reached"] else f"none in {args.cap} (any lam)"]
            more = "" if f["reached"] else "> "  # unreached: FISTA-cap's time bounds FISTA's from below
            cells += [f"{fmt_ms(r['ms'][B] / 1e3)} / {more}{fmt_ms(f['ms'][B] / 1e3)} ({more}{f['ratio'][B]:.1f}x)"
                      for B in args.batches]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"Front ({size}): best NMSE over the lam grid after N iterations, and the time per batch.", "",
                  "| N | FISTA NMSE (dB) (lam) | ISTA NMSE (dB) (lam) | "
                  + " | ".join(f"FISTA b{B} (ms)" for B in args.batches) + " |",
                  "| --- | --- | --- |" + " --- |" * len(args.batches)]
        ista = {p["N"]: p for p in res["fronts"]["ISTA"]}
        for p in res["fronts"]["FISTA"]:
            if p["N"] & (p["N"] - 1) and p["N"] != args.cap:
                continue  # powers of two only here; the matched N are in the table above
            q = ista.get(p["N"])
            lines.append(f"| {p['N']} | {p['nmse']:.2f} ({p['lam']:g}) | "
                         + (f"{q['nmse']:.2f} ({q['lam']:g})" if q else "-") + " | "
                         + " | ".join(fmt_ms(p["ms"][B] / 1e3) for B in args.batches) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(results, args, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(len(results), len(args.batches), squeeze=False,
                             figsize=(4.6 * len(args.batches), 3.9 * len(results)))
    colours = {"ISTA": "tab:gray", "FISTA": "black", "LISTA": "tab:blue", "LISTA-CPSS": "tab:orange",
               "ALISTA": "tab:red"}
    for row, res in zip(axes, results):
        for ax, B in zip(row, args.batches):
            for fam in FAMILIES:
                pts = [p for p in res["fronts"][fam] if not p["N"] & (p["N"] - 1) or p["N"] == args.cap]
                ax.plot([p["ms"][B] for p in pts], [p["nmse"] for p in pts], "--" if fam == "ISTA" else "-",
                        color=colours[fam], marker=".", label=f"{fam}-N (best lam)")
            for net in dict.fromkeys(r["network"] for r in res["nets"].values()):
                pts = [r for r in res["nets"].values() if r["network"] == net]
                ax.plot([r["ms"][B] for r in pts], [r["nmse"] for r in pts], "-o", color=colours.get(net),
                        markersize=5, label=f"{net} (dpc), " + ", ".join(str(r["layers"]) for r in pts) + " layers")
                for r in pts:
                    f = r["FISTA"]
                    if f["reached"]:  # the FISTA that matches it: a dotted line at equal NMSE
                        ax.plot([r["ms"][B], f["ms"][B]], [r["nmse"]] * 2, ":x", color=colours.get(net), lw=0.8,
                                markevery=[1])
            ax.set_xscale("log")
            ax.set_title(f"{res['size']}, batch {B}")
            ax.set_xlabel("forward time per batch (ms, log)")
            ax.set_ylabel("test NMSE to z0 (dB)")
            ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ------------------------------------------------------------------ main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: one small size, second-long training")
    ap.add_argument("--sizes", type=parse_sizes, default=None, help="m x n list (default 50x100,100x200)")
    ap.add_argument("--batches", type=ints, default=None, help="default 1,32,128")
    ap.add_argument("--cap", type=int, default=None, help="ISTA/FISTA iterations searched (default 4096)")
    ap.add_argument("--lams", type=floats, default=None, help=f"ISTA/FISTA lam grid (default {LAMS})")
    ap.add_argument("--nets", default=",".join(NETWORKS), help="comma-separated, of " + ", ".join(NETWORKS))
    ap.add_argument("--budget", type=float, default=None,
                    help="training seconds per network and size (default: " +
                         ", ".join(f"{k} {v:g}" for k, v in BUDGET.items()) + ")")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--depths", type=ints, default=None,
                    help="the trained networks are also run truncated to these depths (default 4,8,12,16)")
    ap.add_argument("--net-lam", type=float, default=0.4, help="the networks' starting thresholds are this / L")
    ap.add_argument("--test", type=int, default=None, help="test samples (default 1000)")
    ap.add_argument("--val", type=int, default=None, help="validation samples (default 1000)")
    ap.add_argument("--patience", type=int, default=10, help="validation checks without progress end a stage")
    ap.add_argument("--reuse", action="store_true", help="load OUT/<m>x<n>_<net>.pt when present")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "runs" / "front")
    ap.add_argument("--plot", type=pathlib.Path, default=None, help="PNG path (default OUT/front.png)")
    ap.add_argument("--min-time", type=float, default=None, help="seconds of calls per timing (default 0.1)")
    ap.add_argument("--min-reps", type=int, default=None, help="calls per timing at least (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, training and timing (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from OUT/front.json, run nothing")
    ap.add_argument("--verbose", action="store_true", help="print the per-layer training progress")
    args = ap.parse_args(argv)
    q = args.quick
    defaults = dict(sizes=[(20, 40)] if q else [(50, 100), (100, 200)], batches=[1, 32, 128],
                    cap=128 if q else 4096, depths=[4, 16] if q else [4, 8, 12, 16],
                    lams=list(LAMS[:4]) if q else list(LAMS), test=200 if q else 1000,
                    val=100 if q else 1000, min_time=0.0 if q else 0.1, min_reps=2 if q else 3)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.max_reps = 5 if q else 50
    args.check_every = 10 if q else 50
    args.stage_iters = (30, 15, 5) if q else (6000, 3000, 1500)
    wanted = [s for s in args.nets.split(",") if s]
    args.budget = {k: (args.budget if args.budget is not None else 1.0 if q else BUDGET[k]) for k in wanted}
    args.plot = args.plot or args.out / "front.png"
    if args.plot_only:
        saved = json.loads((args.out / "front.json").read_text())
        args.batches, args.cap = saved["batches"], saved["cap"]
        results = _int_keys(saved["results"])
        plot(results, args, args.plot)
        return results
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args, wanted, argv)
    finally:
        torch.set_num_threads(threads)


def _int_keys(value):
    """front.json's results with the batch keys ("1", "32", ...) back to ints."""
    if isinstance(value, dict):
        return {int(k) if isinstance(k, str) and k.isdigit() else k: _int_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_int_keys(v) for v in value]
    return value


def _run(args, wanted, argv):
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    log_file = open(args.out / "log.txt", "w")

    def log(text):
        print(text, flush=True)
        log_file.write(text + "\n")

    import dpc
    classes = {name: dpc.load(ROOT / "examples" / NETWORKS[name]) for name in wanted}
    header = [f"## Accuracy against time{' (quick smoke run)' if args.quick else ''}", "",
              f"- machine: {machine_line()}",
              f"- command: python benchmarks/front.py {' '.join(sys.argv[1:] if argv is None else argv)}",
              f"- noiseless sparse coding, p = 0.1, test {args.test} samples, NMSE to the true code z0; "
              f"ISTA/FISTA lam grid {', '.join(f'{v:g}' for v in args.lams)}, N up to {args.cap}; networks "
              f"{args.layers} layers, thresholds from {args.net_lam:g}/L, trained layer-wise "
              + ", ".join(f"{k} {v:g} s" for k, v in args.budget.items()) + " per size"
              + (" (or loaded: --reuse)" if args.reuse else "")
              + f"; float32, {args.threads} torch thread(s) for training and timing"]
    for line in header:
        log(line)
    results = []
    for m, n in args.sizes:
        log(f"size {m}x{n}:")
        results.append(run_size(m, n, args, classes, log))
        text = markdown(results, args, header)
        (args.out / "front.md").write_text(text)
    load_end = machine_line().split("load average ")[-1].split(";")[0]
    text = markdown(results, args, header + [f"- load average at the end: {load_end}; total "
                                             f"{time.perf_counter() - start:.0f} s"])
    (args.out / "front.md").write_text(text)
    (args.out / "front.json").write_text(json.dumps(dict(
        sizes=[r["size"] for r in results], batches=args.batches, cap=args.cap, lams=args.lams,
        results=results), indent=1, default=str))
    plotted = plot(results, args, args.plot)
    log(text)
    log(f"wrote {args.out / 'front.md'}" + (f" and {args.plot}" if plotted else " (no matplotlib: no plot)"))
    log_file.close()
    return results


if __name__ == "__main__":
    main()
