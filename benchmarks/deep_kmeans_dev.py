"""Development runs for examples/train_deep_kmeans.py: several end-to-end variants from one pretraining per seed.

For each seed this does what the script's run_seed does up to the k-means start (the same
autoencoder, the same pretraining, the same random streams), then trains every requested
end-to-end variant from a copy of that start, and the two-step pipeline at equal training for
each distinct epoch count. A variant's row is therefore what `train_deep_kmeans.py` prints with
the same settings (e.g. variant `e100` = `--epochs 100`), without paying the pretraining once per
variant. Variants are `name=key:value,key:value` with keys epochs, lr, lr_centroids, lam, tau;
the defaults are the script's.

    python benchmarks/deep_kmeans_dev.py --first-seed 100 --seeds 10 base= e100=epochs:100

Prints one line per seed and variant, then per variant: ACC / NMI mean ± std, and the margin over
the plain two-step pipeline and over the two-step pipeline at equal epochs (the difference of the
means, and paired by seed: mean ± std, seeds higher). Labels of the digits are used for the scores:
run it on development seeds only (docs/kmeans.md, the seed rule).
"""
import argparse
import copy
import json
import pathlib
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))
from train_deep_kmeans import (AutoEncoder, codes, load_data, load_layer, pretrain, scores,  # noqa: E402
                               train_end_to_end)
from sklearn.cluster import KMeans  # noqa: E402

DEFAULTS = {"epochs": 50, "lr": 1e-4, "lr_centroids": 1e-3, "lam": 1.0, "tau": 0.2}


def parse_variant(text):
    name, _, spec = text.partition("=")
    settings = dict(DEFAULTS)
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition(":")
        if key not in DEFAULTS:
            raise SystemExit(f"unknown key {key!r} in variant {text!r}; keys: {', '.join(DEFAULTS)}")
        settings[key] = int(value) if key == "epochs" else float(value)
    return name, settings


def run_seed(X, y, seed, variants, Layer, pretrain_epochs=150, reseat=1.5, cache=None):
    """cache: a folder keeping each seed's pretrained autoencoder, random stream and k-means start (and
    the two-step rows), so that a later run with other variants skips the pretraining."""
    x = torch.as_tensor(X)
    ae = AutoEncoder(16)
    path = cache and pathlib.Path(cache) / f"seed{seed}.pt"
    if path and path.exists():
        saved = torch.load(path, weights_only=False)
        ae.load_state_dict(saved["ae"])
        state, centers, out = saved["gen"], saved["centers"], saved["out"]
    else:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        ae = AutoEncoder(16)
        pretrain(ae, x, pretrain_epochs, gen)
        km = KMeans(10, n_init=10, random_state=seed).fit(codes(ae.encoder, x))
        out = {"two-step": scores(y, km.labels_)}
        state, centers = gen.get_state(), km.cluster_centers_
    for epochs in sorted({v["epochs"] for v in variants.values()}):
        if f"equal{epochs}" in out:
            continue
        alone = copy.deepcopy(ae)
        pretrain(alone, x, epochs, torch.Generator().set_state(state))
        labels = KMeans(10, n_init=10, random_state=seed).fit(codes(alone.encoder, x)).labels_
        out[f"equal{epochs}"] = scores(y, labels)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"ae": ae.state_dict(), "gen": state, "centers": centers, "out": out}, path)
    out = dict(out)
    for name, v in variants.items():
        t = time.perf_counter()
        net = copy.deepcopy(ae)
        layer = Layer(C=torch.as_tensor(centers, dtype=torch.float32), tau=v["tau"])
        moves = []
        model, _ = train_end_to_end(net, layer, x, v["epochs"], torch.Generator().set_state(state), lr=v["lr"],
                                    lr_centroids=v["lr_centroids"], lam=v["lam"], reseat=reseat or None,
                                    reseats=moves)
        with torch.no_grad():
            out[name] = scores(y, model(x).argmax(-1).numpy())
        out[name]["moves"] = len(moves)
        out[name]["seconds"] = time.perf_counter() - t
    return out


def margin(a, b):
    d = np.subtract(a, b)
    return f"{np.mean(a) - np.mean(b):+.3f} (paired {d.mean():+.3f} ± {d.std():.3f}, {(d > 0).sum()}/{len(d)})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--first-seed", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", default="", help="write every score as JSON here")
    parser.add_argument("--cache", default="", help="a folder for the pretrained start of each seed (reused)")
    parser.add_argument("variants", nargs="+", help="name=key:value,... (e.g. base= e100=epochs:100)")
    args = parser.parse_args(argv)
    if args.first_seed < 100:
        raise SystemExit("development runs use seeds 100 and up; seeds 0-9 are the table's (docs/kmeans.md)")
    torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)
    variants = dict(parse_variant(v) for v in args.variants)
    X, y = load_data()
    Layer = load_layer()
    rows = {}
    start = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        rows[seed] = run_seed(X, y, seed, variants, Layer, cache=args.cache or None)
        r = rows[seed]
        print(f"seed {seed}: " + " | ".join(f"{k} {r[k]['ACC']:.3f}/{r[k]['NMI']:.3f}"
                                             + (f" ({r[k]['moves']} fix)" if r[k].get("moves") else "")
                                             for k in r), flush=True)
        if args.out:
            pathlib.Path(args.out).write_text(json.dumps({str(s): v for s, v in rows.items()}, indent=1))
    seeds = list(rows)
    col = lambda key, m: [rows[s][key][m] for s in seeds]  # noqa: E731
    print(f"\nseeds {seeds[0]}..{seeds[-1]}: ACC / NMI mean ± std; margins of end to end (mean gap, paired)")
    for key in ["two-step"] + sorted(k for k in rows[seeds[0]] if k.startswith("equal")):
        print(f"{key:12s} {np.mean(col(key, 'ACC')):.3f} ± {np.std(col(key, 'ACC')):.3f} / "
              f"{np.mean(col(key, 'NMI')):.3f} ± {np.std(col(key, 'NMI')):.3f}")
    for name, v in variants.items():
        eq = f"equal{v['epochs']}"
        print(f"{name:12s} {np.mean(col(name, 'ACC')):.3f} ± {np.std(col(name, 'ACC')):.3f} / "
              f"{np.mean(col(name, 'NMI')):.3f} ± {np.std(col(name, 'NMI')):.3f}  {v}")
        for m in ("ACC", "NMI"):
            print(f"    {m} vs two-step {margin(col(name, m), col('two-step', m))}; "
                  f"vs {eq} {margin(col(name, m), col(eq, m))}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
