"""The reference-schedule runs' progress, read from their logs (issue 25): NMSE against training iterations.

benchmarks/sparse_coding.py --log FILE writes a row every 1000 iterations (`check`: the validation NMSE of
the layer in training), one at every stage's end and one per finished layer (`layer_done`: the test NMSE
of the network cut at that depth). This script reads one or more such logs and
  - prints, per network, the finished layers (iterations, seconds, test NMSE, ms per iteration in that layer)
    and, for an unfinished run, an estimate of what the remaining layers need from the iterations per layer
    and the cost per iteration measured so far (stated as an estimate, never as a result; see `estimate`);
  - plots validation NMSE against iterations, every finished layer's test NMSE as a dot and the published
    layer-16 number as a dashed line.

    python benchmarks/reference_curve.py /work/runs/alista_ref/log.csv /work/runs/cpss_ref/log.csv \
        --plot docs/img/reference_schedule.png

Measured, not asserted: nothing here trains.
"""
from __future__ import annotations

import argparse
import csv
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from sparse_coding import PUBLISHED  # noqa: E402  the published layer-16 numbers, one place

LAYERS = 16


def read_log(path: pathlib.Path) -> dict:
    """{(setting, network): {"checks": [(iterations, val_db, layer)], "layers": {layer: row}, "last": row}}."""
    runs: dict = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            run = runs.setdefault((row["setting"], row["network"]), {"checks": [], "layers": {}, "last": None})
            if row["event"] == "check":
                run["checks"].append((int(row["iterations"]), float(row["val_db"]), int(row["layer"])))
            elif row["event"] == "layer_done":
                run["layers"][int(row["layer"])] = row
            run["last"] = row
    return runs


def layer_table(run: dict) -> tuple[list[str], dict]:
    """Markdown rows of the finished layers, and the per-layer iterations and seconds."""
    rows, its, secs = [], {}, {}
    prev_i, prev_s = 0, 0.0
    for layer in sorted(run["layers"]):
        row = run["layers"][layer]
        i, s = int(row["iterations"]), float(row["seconds"])
        its[layer], secs[layer] = i - prev_i, s - prev_s
        ms = 1000 * secs[layer] / max(its[layer], 1)
        rows.append(f"| {layer} | {its[layer]:,} | {i:,} | {s:.0f} | {ms:.1f} | {float(row['test_db']):.2f} |")
        prev_i, prev_s = i, s
    return rows, {"its": its, "secs": secs}


def estimate(run: dict, per_layer: dict) -> str | None:
    """What the unfinished layers need if each takes the iterations of the finished ones (their mean, and their
    fewest and most for a range) and an iteration at depth t costs t times the cheapest cost per layer of depth
    measured so far (a step and the amortised validation both run the t layers; the cheapest is the one least
    slowed by other jobs, so this is the time on a core of one's own, not at the load the run saw)."""
    done = sorted(per_layer["its"])
    if not done or done[-1] >= LAYERS:
        return None
    counts = [per_layer["its"][t] for t in done]
    per_depth = min(per_layer["secs"][t] / max(per_layer["its"][t], 1) / t for t in done)  # seconds per layer of depth
    depth = sum(range(done[-1] + 1, LAYERS + 1))
    hours = [n * per_depth * depth / 3600 for n in (min(counts), sum(counts) / len(counts), max(counts))]
    return (f"estimate, not a measurement: layers {done[-1] + 1}-{LAYERS} at {min(counts):,}-{max(counts):,} iterations "
            f"each (the finished layers' fewest and most), an iteration at depth t costing t x {1000 * per_depth:.1f} ms "
            f"(the cheapest measured per layer of depth), need {hours[0]:.1f} to {hours[2]:.1f} more hours "
            f"({hours[1]:.1f} at the mean) of one otherwise idle core")


def plot(runs: dict, path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (setting, network), run in sorted(runs.items()):
        label = f"{network} ({setting})"
        its = [c[0] for c in run["checks"]]
        vals = [c[1] for c in run["checks"]]
        (line,) = ax.plot(its, vals, lw=1, label=f"{label}: validation, layer in training")
        done = sorted(run["layers"])
        ax.plot([int(run["layers"][t]["iterations"]) for t in done],
                [float(run["layers"][t]["test_db"]) for t in done], "o", ms=3, color=line.get_color())
        if network in PUBLISHED and setting == "noiseless":
            ax.axhline(PUBLISHED[network], ls="--", lw=0.8, color=line.get_color(),
                       label=f"{network}: published, layer 16 ({PUBLISHED[network]} dB)")
    ax.set_xlabel("training iterations (batches of 64)")
    ax.set_ylabel("NMSE (dB)")
    ax.set_title("reference schedule, 250 x 500, CPU, one thread; dots: test NMSE at each finished layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("logs", nargs="+", type=pathlib.Path)
    ap.add_argument("--plot", type=pathlib.Path)
    args = ap.parse_args(argv)
    runs: dict = {}
    for log in args.logs:
        runs.update(read_log(log))
    for (setting, network), run in sorted(runs.items()):
        rows, per_layer = layer_table(run)
        last = run["last"]
        print(f"\n{network}, {setting}: last row {last['time']}, layer {last['layer']}, "
              f"{int(last['iterations']):,} iterations, {float(last['seconds']):.0f} s")
        print("| layer | iterations in the layer | iterations so far | seconds so far | ms / iteration | test NMSE (dB) |")
        print("| --- | --- | --- | --- | --- | --- |")
        print("\n".join(rows))
        if network in PUBLISHED and setting == "noiseless":
            print(f"published at layer 16: {PUBLISHED[network]} dB")
        note = estimate(run, per_layer)
        if note:
            print(note)
    if args.plot:
        plot(runs, args.plot)


if __name__ == "__main__":
    main()
