"""The LISTA family on Chen et al. (2018)'s synthetic sparse coding, every network compiled by dpc.

Setting (Chen, Liu, Wang & Yin, NeurIPS 2018; Open-L2O): A (250 x 500), A_ij ~ N(0, 1/m) with
unit-norm columns; codes x = Bernoulli(0.1) * N(0, 1); y = A x, noiseless or at SNR 20 dB;
16 layers; lambda = 0.4 for ISTA/FISTA and for every network's starting thresholds.

Training, per network, layer-wise as in the LISTA-CPSS code: for t = 1..16, layer t's own
parameters alone at lr 5e-4, then layers 1..t together at 1e-4 and at 1e-5 (tied parameters
train in every stage); every stage minimises the MSE of layer t's output on fresh batches of 64
(Adam) and stops when the NMSE on a fixed validation set (1000 samples, 250 with --quick) stops
improving, or at its iteration cap, or when its share of the network's time budget is spent; the
best parameters seen are kept. NMSE (dB) is pooled over a fixed 1000-sample test set, per layer.

    python benchmarks/sparse_coding.py --quick [--threads 1]        # CPU, noiseless, a few minutes
    python benchmarks/sparse_coding.py --full --schedule capped --device cuda --out runs/sparse_coding

--schedule reference (the default with --full: the published comparison) is the reference code's own
schedule instead (examples/sparse_coding.ReferenceSchedule): the learning rates of already-trained
layers decay by 0.3 a layer, a stage ends when 4000 iterations pass without a better validation NMSE
(checked every 1000), at most 200,000 iterations a stage, thresholds from lam / (1.001 L). It takes
hours a network; --checkpoint DIR makes it resumable (rerun the same command: finished networks are
read back, a stopped one continues where it stopped) and --log FILE.csv appends NMSE-vs-iteration rows:
    python benchmarks/sparse_coding.py --full --noiseless --only ALISTA --checkpoint runs/ck --log runs/ck/log.csv

Writes OUT/results.md (tables, rewritten after every network), OUT/results.json, OUT/log.txt and
OUT/nmse.png (with matplotlib); exits with status 1 unless every learned network is below both ISTA
and FISTA at every depth. On a machine without dpc's compiler dependencies (lark), compile here and
carry the modules, which need nothing but torch:
    python benchmarks/sparse_coding.py --emit-modules runs/modules                            # here
    python3 benchmarks/sparse_coding.py --full --device cuda --modules runs/modules --out OUT  # there
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import pathlib
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from perf_common import ROOT, load_generated, sparse_coding  # noqa: E402


sc = sparse_coding()

NETWORKS = (  # name, example file
    ("LISTA", "lista.dp"),
    ("LISTA-CP", "lista_cp.dp"),
    ("LISTA-CPSS", "lista_cpss.dp"),
    ("ALISTA", "alista.dp"),
    ("LFISTA", "lfista.dp"),
    ("SC2Net", "sc2net.dp"),
)
CLASSICAL = ("ISTA", "FISTA")
# Layer 16, noiseless, as reported by Open-L2O (Chen et al. 2021) for this setting.
PUBLISHED = {"ISTA": -6, "FISTA": -8, "LISTA": -35, "LISTA-CP": -30, "LISTA-CPSS": -63, "ALISTA": -78,
             "LFISTA": -29}

MODES = {
    # iters: caps per stage (lr 5e-4, 1e-4, 1e-5); budget: seconds per network and setting, shared out
    # over layers (in proportion to their depth) and stages; total: seconds of training for the whole run
    "quick": dict(settings=(None,), iters=(60, 30, 10), check_every=10, patience=3, n_val=250,
                  budget=None, total=None),
    "full": dict(settings=(None, 20.0), iters=(6000, 3000, 1500), check_every=50, patience=10, n_val=1000,
                 budget=40.0, total=450.0),
}
LR, LR_FACTORS, STAGE_SHARE, BATCH = 5e-4, (1.0, 0.2, 0.02), (0.5, 0.3, 0.2), 64


# --- networks -----------------------------------------------------------------------

def load_class(file: str, modules: pathlib.Path | None):
    """The generated nn.Module class: compiled from examples/FILE by dpc, or imported from a module
    compiled earlier (--modules), which needs nothing but torch. A FILE given as a path (--program)
    is compiled from there (.dp) or imported (.py)."""
    path = pathlib.Path(file)
    if len(path.parts) > 1 or path.is_absolute():
        if path.suffix == ".py":
            return load_generated(path, f"dpc_bench_{path.stem}")
        return _dpc().load(path)
    if modules is None:
        return _dpc().load(ROOT / "examples" / file)
    stem = pathlib.Path(file).stem
    return load_generated(modules / f"{stem}.py", f"dpc_bench_{stem}")


def _dpc():
    """dpc, pip-installed or straight from this checkout (its packages live in compiler/, grammar/, backends/)."""
    try:
        import dpc
        return dpc
    except ImportError:
        spec = importlib.util.spec_from_file_location("dpc", ROOT / "compiler" / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / "compiler"), str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["dpc"] = module
        spec.loader.exec_module(module)
        return module


def emit_modules(directory: pathlib.Path):
    from dpc.api import compile_file
    _dpc()
    directory.mkdir(parents=True, exist_ok=True)
    for _, file in NETWORKS:
        target = directory / (pathlib.Path(file).stem + ".py")
        target.write_text(compile_file(str(ROOT / "examples" / file)))
        print(f"wrote {target}")


def per_layer_parameters(cls, net, A, lam):
    """Names of the per-layer parameters (layer k uses P[k]): the generated class lists them;
    for a module that does not, those whose first axis follows `steps`."""
    if hasattr(cls, "per_layer_parameters"):
        return set(cls.per_layer_parameters)
    other = cls(D=A, lam=lam, steps=net.steps + 1)
    shapes = {n: p.shape for n, p in other.named_parameters()}
    return {n for n, p in net.named_parameters() if p.dim() and shapes[n][0] == p.shape[0] + 1}


# --- training -----------------------------------------------------------------------

@torch.no_grad()
def val_nmse(net, problem, t):
    y, x = problem.val
    return sc.nmse_db(net(y, steps=t), x)


def train_layerwise(net, per_layer, problem, cfg, budget, log):
    """Layer-wise training (LISTA-CPSS's schedule) within `budget` seconds (None: iteration caps only);
    while layer t trains the network runs its first t layers (forward(steps=t)), so no stage pays for
    the layers after it."""
    T = net.steps
    params = [p for p in net.parameters() if p.requires_grad]
    named = dict(net.named_parameters())
    stacked = [named[n] if n in named else getattr(net, n) for n in per_layer]  # stacks or ParameterLists
    start = time.perf_counter()
    iterations = 0
    for t in range(1, T + 1):
        for stage, factor in enumerate(LR_FACTORS):
            lo = t - 1 if stage == 0 else 0  # stage 0: the new layer only
            share = math.inf if budget is None else budget * t / (T * (T + 1) / 2) * STAGE_SHARE[stage]
            deadline = time.perf_counter() + share
            iterations += _stage(net, params, stacked, lo, t, problem, LR * factor, cfg["iters"][stage],
                                 deadline, cfg)
        log(f"    layer {t:2d}: val {val_nmse(net, problem, t):7.2f} dB  ({time.perf_counter() - start:5.1f} s)")
    return iterations, time.perf_counter() - start


def _stage(net, params, stacked, lo, t, problem, lr, cap, deadline, cfg):
    """Adam on the MSE of layer t's output until the validation NMSE stops improving
    (`patience` checks), `cap` iterations or the deadline; keeps the best parameters seen."""
    opt = torch.optim.Adam(params, lr=lr)
    best, best_state, stale, it = val_nmse(net, problem, t), _copy(net), 0, 0
    for it in range(1, cap + 1):
        y, x = problem.batch(BATCH)
        loss = torch.nn.functional.mse_loss(net(y, steps=t), x)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        sc.keep_layers(stacked, lo, t)  # fresh Adam, zero gradient: the other layers' copies do not move
        opt.step()
        last = it == cap or time.perf_counter() > deadline
        if it % cfg["check_every"] == 0 or last:
            v = val_nmse(net, problem, t)
            if v < best - 1e-3:
                best, best_state, stale = v, _copy(net), 0
            else:
                stale += 1
            if stale >= cfg["patience"]:
                break
        if last:
            break
    net.load_state_dict(best_state)
    return it


def _copy(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


# --- the reference schedule: resumable, logged ---------------------------------------------

LOG_FIELDS = ("time", "setting", "network", "event", "layer", "stage", "lr", "stage_iter", "iterations",
              "seconds", "val_db", "best_val_db", "test_db")


def csv_logger(path: pathlib.Path | None):
    """row(dict) appends one line to the CSV at `path` (header when the file is new); a no-op without one."""
    if path is None:
        return lambda row: None
    import csv
    path.parent.mkdir(parents=True, exist_ok=True)

    def row(values):
        new = not path.exists() or path.stat().st_size == 0
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, LOG_FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: (f"{v:.3g}" if k == "lr" else f"{v:.4f}" if isinstance(v, float) else v)
                             for k, v in values.items()})
    return row


def _save_atomic(obj, path: pathlib.Path):
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def train_reference(name, net, problem, schedule, layers, log, row, checkpoint, save_every, max_seconds):
    """Train `net` with the reference schedule; with a checkpoint path, resume from it and save to it
    (every `save_every` seconds, at every stage's end and on stopping). Returns (iterations, seconds,
    finished)."""
    trainer = sc.ReferenceTrainer(net, problem, schedule, layers)
    if checkpoint is not None and checkpoint.exists():
        trainer.load_state_dict(torch.load(checkpoint, weights_only=False)["trainer"])
        t, stage, _ = trainer.plan[min(trainer.position, len(trainer.plan) - 1)]
        log(f"    resumed from {checkpoint}: " + ("finished" if trainer.done else
            f"layer {t} stage {stage} iteration {trainer.i}, {trainer.iterations:,} iterations, "
            f"{trainer.seconds:.0f} s so far"))
        if trainer.done:
            return trainer.iterations, trainer.seconds, True
    last = [time.monotonic()]

    def save():
        if checkpoint is not None:
            _save_atomic({"network": name, "trainer": trainer.state_dict()}, checkpoint)
        last[0] = time.monotonic()

    def on_check(info):
        row(dict(info, network=name, time=time.strftime("%Y-%m-%dT%H:%M:%S")))
        if info["event"] == "stage_end":
            log(f"    layer {info['layer']:2d} stage {info['stage']} (lr {info['lr']:.0e}): {info['stage_iter']:6d} it, "
                f"val {info['val_db']:7.2f} dB (best {info['best_val_db']:7.2f})  [{info['iterations']:,} it, "
                f"{info['seconds']:.0f} s]")

    def on_layer(t):
        y, x = problem.test
        with torch.no_grad():
            test_db = sc.nmse_db(net(y, steps=t), x)
        row(dict(event="layer_done", layer=t, network=name, test_db=test_db, iterations=trainer.iterations,
                 seconds=round(trainer.seconds, 1), time=time.strftime("%Y-%m-%dT%H:%M:%S")))
        log(f"    layer {t:2d} done: test {test_db:7.2f} dB  [{trainer.iterations:,} it, {trainer.seconds:.0f} s]")

    finished = trainer.run(on_check=on_check, on_layer=on_layer,
                           should_save=lambda: time.monotonic() - last[0] >= save_every, save=save,
                           max_seconds=max_seconds, stop=lambda: STOP["signal"] is not None)
    if not finished:
        t, stage, _ = trainer.plan[trainer.position]
        why = "its time budget" if STOP["signal"] is None else f"signal {STOP['signal']}"
        log(f"    stopped ({why}) at layer {t} stage {stage} iteration {trainer.i}, {trainer.iterations:,} "
            f"iterations, {trainer.seconds:.0f} s" + ("; rerun the same command to continue" if checkpoint else ""))
    return trainer.iterations, trainer.seconds, finished


STOP = {"signal": None}  # set by SIGTERM/SIGINT during a reference run: save the checkpoint and stop


def _stop_on_signals():
    import signal

    def handler(signum, frame):
        STOP["signal"] = signal.Signals(signum).name
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


# --- one setting ------------------------------------------------------------------------

def run_setting(snr, classes, cfg, device, lam, layers, log, budget, curves, info, save, reference=None):
    """ISTA, FISTA and every network on one setting, into curves and info; budget(): seconds for the
    next network; save() after each, so a run stopped early still leaves its tables. With `reference`
    (a dict: schedule, row, checkpoint dir, save_every), the reference schedule trains each network."""
    m, n = cfg.get("size", (250, 500))
    problem = sc.make_problem(m=m, n=n, p=0.1, snr_db=snr, seed=0, n_val=cfg["n_val"], n_test=cfg.get("n_test", 1000),
                              dtype=torch.float32, device=device)
    y, x = problem.test
    curves["ISTA"] = [sc.nmse_db(z, x) for z in sc.ista(problem.A, y, lam, layers)]
    curves["FISTA"] = [sc.nmse_db(z, x) for z in sc.fista(problem.A, y, lam, layers)]
    save()
    for name, cls in classes.items():
        if STOP["signal"] is not None:
            break
        torch.manual_seed(0)  # SC2Net's Xavier gates
        net_lam = lam if reference is None else lam / reference["schedule"].threshold_scale
        net = cls(D=problem.A, lam=net_lam, steps=layers).to(device)
        per_layer = per_layer_parameters(cls, net, problem.A, lam)
        count = sum(p.numel() for p in net.parameters() if p.requires_grad)
        log(f"  {name}: {count:,} learned numbers ({len(per_layer)} tensors per layer)")
        untrained = sc.nmse_per_layer(net, y, x)
        if reference is None:
            iterations, seconds = train_layerwise(net, per_layer, problem, cfg, budget(), log)
            finished = True
        else:
            checkpoint = None
            if reference["checkpoint"] is not None:
                checkpoint = reference["checkpoint"] / f"{setting_name(snr).replace(' ', '')}_{name}.pt"
            iterations, seconds, finished = train_reference(
                name, net, problem, reference["schedule"], layers, log,
                lambda values: reference["row"](dict(values, setting=setting_name(snr))),
                checkpoint, reference["save_every"], cfg["budget"])
        curves[name] = sc.nmse_per_layer(net, y, x)
        info[name] = dict(parameters=count, iterations=iterations, seconds=round(seconds, 1),
                          untrained_last=untrained[-1], finished=finished)
        save()


def beats_classical(curves) -> list[str]:
    """The learned networks that are not below both ISTA and FISTA at every depth."""
    bound = [min(a, b) for a, b in zip(curves["ISTA"], curves["FISTA"])]
    return [n for n in curves if n not in CLASSICAL and any(v >= b for v, b in zip(curves[n], bound))]


# --- reporting ----------------------------------------------------------------------------

def setting_name(snr):
    return "noiseless" if snr is None else f"SNR {snr:g} dB"


def markdown(results, mode, device, cfg) -> str:
    lines = [f"# LISTA family, Chen et al. 2018 setting ({mode} run on {device})", "",
             f"Schedule: {cfg}; lr {LR} then x{LR_FACTORS[1]}, x{LR_FACTORS[2]}; batch {BATCH}.", ""]
    for setting, (curves, info) in results.items():
        names = list(curves)
        lines += [f"## {setting}: test NMSE (dB) per layer", "",
                  "| layer | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
        for k in range(len(curves["ISTA"])):
            lines.append(f"| {k + 1} | " + " | ".join(f"{curves[n][k]:.2f}" for n in names) + " |")
        if setting == "noiseless" and len(curves["ISTA"]) == 16:
            lines.append("| published (16) | " + " | ".join(
                f"{PUBLISHED[n]}" if n in PUBLISHED else "-" for n in names) + " |")
        lines.append("")
        lines += ["| network | learned numbers | iterations | seconds | schedule finished |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {n} | {i['parameters']:,} | {i['iterations']} | {i['seconds']} | "
                  f"{'yes' if i.get('finished', True) else 'no (time budget)'} |" for n, i in info.items()]
        losers = beats_classical(curves)
        lines += ["", "Every learned network below ISTA and FISTA at every depth: "
                  + ("yes" if not losers else "no (" + ", ".join(losers) + ")"), ""]
    return "\n".join(lines)


def plot(results, path: pathlib.Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.8), squeeze=False)
    for ax, (setting, (curves, _)) in zip(axes[0], results.items()):
        for name, values in curves.items():
            style = "--" if name in CLASSICAL else "-"
            ax.plot(range(1, len(values) + 1), values, style, marker="o", markersize=3, label=name)
        ax.set_title(setting)
        ax.set_xlabel("layer (iteration)")
        ax.set_ylabel("test NMSE (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick",
                      help="small budgets, minutes on 2 CPU cores; noiseless unless --snr (the default)")
    mode.add_argument("--full", action="store_const", dest="mode", const="full",
                      help="noiseless and SNR 20 dB, sized for about 9 minutes on one H100")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "runs" / "sparse_coding")
    ap.add_argument("--modules", type=pathlib.Path, help="import compiled modules from here instead of compiling")
    ap.add_argument("--emit-modules", type=pathlib.Path, metavar="DIR", help="compile the examples into DIR and stop")
    ap.add_argument("--budget", type=float, help="seconds per network and setting (overrides the mode's)")
    ap.add_argument("--total", type=float, help="seconds of training for the whole run (overrides the mode's)")
    ap.add_argument("--iters", type=int, help="iteration cap of the first stage of a layer; the others get 1/2, 1/6")
    ap.add_argument("--patience", type=int, help="validation checks without improvement that end a stage")
    ap.add_argument("--schedule", choices=("capped", "reference"),
                    help="capped: the budgets above (the default with --quick); reference: the reference code's "
                         "schedule (the default with --full), hours a network")
    ap.add_argument("--checkpoint", type=pathlib.Path, metavar="DIR",
                    help="reference schedule: save each network's training state here and resume from it")
    ap.add_argument("--log", type=pathlib.Path, metavar="FILE.csv",
                    help="reference schedule: append a row per age check, stage end and finished layer")
    ap.add_argument("--save-every", type=float, default=300.0, help="seconds between checkpoints (default 300)")
    ap.add_argument("--maxit", type=int, help="reference schedule: iteration cap of a stage (200000)")
    ap.add_argument("--better-wait", type=int, help="reference schedule: patience in iterations (4000)")
    ap.add_argument("--age-every", type=int, help="reference schedule: iterations between patience checks (1000)")
    ap.add_argument("--val-step", type=int, help="reference schedule: iterations between validations (10)")
    ap.add_argument("--decay-rate", type=float, help="reference schedule: learning-rate decay of trained layers (0.3)")
    ap.add_argument("--size", default="250x500", help="m x n of the dictionary (default 250x500)")
    ap.add_argument("--n-val", type=int, help="validation samples (the mode's: 250 quick, 1000 full)")
    ap.add_argument("--n-test", type=int, default=1000, help="test samples (default 1000)")
    ap.add_argument("--program", action="append", default=[], metavar="NAME=FILE",
                    help="add (or replace) network NAME compiled from FILE (.dp, or a compiled .py), e.g. the "
                         "reference-form LISTA (one B shared by all layers): --program LISTA-sharedB=PATH.dp")
    setting = ap.add_mutually_exclusive_group()
    setting.add_argument("--noiseless", action="store_true", help="the noiseless setting only")
    setting.add_argument("--snr", type=float, metavar="DB", help="this SNR only (dB), instead of the mode's settings")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--lam", type=float, default=0.4)
    ap.add_argument("--only", help="comma-separated network names")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.emit_modules:
        emit_modules(args.emit_modules)
        return 0
    cfg = dict(MODES[args.mode or "quick"])
    if args.budget is not None:
        cfg["budget"] = args.budget
    if args.total is not None:
        cfg["total"] = args.total
    if args.iters is not None:
        cfg["iters"] = (args.iters, args.iters // 2, args.iters // 6)
    if args.patience is not None:
        cfg["patience"] = args.patience
    if args.noiseless:
        cfg["settings"] = (None,)
    if args.snr is not None:
        cfg["settings"] = (args.snr,)
    cfg["size"] = tuple(int(v) for v in args.size.lower().split("x"))
    cfg["n_test"] = args.n_test
    if args.n_val is not None:
        cfg["n_val"] = args.n_val
    schedule_name = args.schedule or ("reference" if args.mode == "full" else "capped")
    reference = None
    if schedule_name == "reference":
        overrides = {k: v for k, v in dict(maxit=args.maxit, better_wait=args.better_wait, age_every=args.age_every,
                                           val_step=args.val_step, decay_rate=args.decay_rate).items()
                     if v is not None}
        schedule = sc.ReferenceSchedule(**overrides)
        if args.checkpoint is not None:
            args.checkpoint.mkdir(parents=True, exist_ok=True)
        reference = dict(schedule=schedule, row=csv_logger(args.log), checkpoint=args.checkpoint,
                         save_every=args.save_every)
        if args.checkpoint is not None:
            _stop_on_signals()
        cfg = dict(cfg, schedule="reference", reference=dict(schedule.__dict__), budget=args.budget, total=None)
    if args.threads:
        torch.set_num_threads(args.threads)
    wanted = set(args.only.split(",")) if args.only else None
    programs = dict(NETWORKS)
    for item in args.program:
        name, _, file = item.partition("=")
        programs[name] = str(pathlib.Path(file).resolve())
    classes = {name: load_class(file, args.modules) for name, file in programs.items()
               if not wanted or name in wanted or any(item.startswith(name + "=") for item in args.program)}
    args.out.mkdir(parents=True, exist_ok=True)
    log_file = open(args.out / "log.txt", "a" if reference is not None and args.checkpoint else "w")

    def log(text):
        print(text, flush=True)
        log_file.write(text + "\n")

    log(f"{args.mode or 'quick'} run on {args.device} (torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}): {cfg}")
    start = time.perf_counter()
    runs = [0]

    def budget():
        """The mode's seconds per network, less if the run's total would not otherwise hold."""
        runs[0] += 1
        if cfg["total"] is None:
            return cfg["budget"]
        left = cfg["total"] - (time.perf_counter() - start)
        return max(1.0, min(cfg["budget"], left / (len(cfg["settings"]) * len(classes) - runs[0] + 1)))

    results = {}

    def save():
        text = markdown(results, args.mode or "quick", args.device, cfg)
        (args.out / "results.md").write_text(text)
        (args.out / "results.json").write_text(json.dumps(
            {"mode": args.mode or "quick", "device": args.device, "config": cfg, "lam": args.lam,
             "results": {s: {"nmse_db": c, "info": i} for s, (c, i) in results.items()}}, indent=1))
        return text

    for snr in cfg["settings"]:
        log(f"== {setting_name(snr)}")
        results[setting_name(snr)] = curves, info = {}, {}
        run_setting(snr, classes, cfg, args.device, args.lam, args.layers, log, budget, curves, info, save, reference)
    text = save()
    plotted = plot(results, args.out / "nmse.png")
    log(text)
    log(f"total {time.perf_counter() - start:.0f} s; wrote {args.out / 'results.md'}"
        + (f" and {args.out / 'nmse.png'}" if plotted else " (no matplotlib: no plot)"))
    log_file.close()
    return 0 if not any(beats_classical(c) for c, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
