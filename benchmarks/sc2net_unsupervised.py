"""SC2Net's own setting: unsupervised sparse coding of images, the LASSO objective against the depth.

SC2Net (Zhou et al., AAAI 2018; code: joeyzhouty/SC2Net, README and Lcod/) compares its Sparse LSTM with
LISTA and LFISTA built with `shared=True` (one set of weights for every layer) and trained unsupervised:
every network minimises the LASSO objective F(z) = 0.5 ||x - D z||^2 + lam ||z||_1 of its own output,
on images (MNIST, CIFAR-10), with a dictionary D learned beforehand by scikit-learn's
DictionaryLearning (lam 0.1, K = 100 atoms in its README's commands); it reports F(z_k) - F(z*) and the
reconstruction against the number of layers, one network trained per depth.

Here, with everything offline:
  data        --data digits (default): scikit-learn's bundled handwritten digits, 1797 images of 8 x 8
              pixels scaled to [0, 1], used whole as 64-pixel patches: the nearest offline relative of
              SC2Net's MNIST (digits, pixels in [0, 1], no centring), and small enough that every network
              trains in minutes on one CPU thread. --data patches: 8 x 8 patches of the two photographs
              bundled with scikit-learn (china.jpg, flower.jpg; needs Pillow), grey, each patch centred:
              the natural-image (CIFAR-10-like) case. Fixed split: train / validation / test.
  dictionary  sklearn.decomposition.DictionaryLearning(n_components=K, alpha=lam) on the training set
              (its objective, 0.5 ||X - U V||^2 + alpha ||U||_1 with unit atoms, is this LASSO per sample).
  networks    compiled by dpc from the example programs: LISTA and LFISTA with `learn weights tied`
              (lista.dp, lfista.dp with `untied` -> `tied`), SC2Net (sc2net.dp, `adapt gates(init = ista)`)
              and SC2Net with SC2Net's own Xavier gates (`init = xavier`); one network per depth in
              --depths, each trained with Adam on the mean of net.objective(x, net(x)) over batches of the
              training set (lr, then lr/10 for the last 30 % of the steps), the parameters best on the
              validation objective kept.
  baselines   ISTA and FISTA at every depth 1..max; F(z*) from --fista-iters FISTA iterations (float64).
  reported    on held-out (test) patches: the gap mean F(z_k) - mean F(z*) and the reconstruction error
              sum ||x - D z_k||^2 / sum ||x||^2 per depth; OUT/results.md, results.json, sc2net.png.

    python benchmarks/sc2net_unsupervised.py --threads 1 --out runs/sc2net          # about 10-15 min
    python benchmarks/sc2net_unsupervised.py --smoke                                  # seconds
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from perf_common import ROOT, sparse_coding  # noqa: E402

sc = sparse_coding()

# name, example program, text replacements (each must occur)
NETWORKS = (
    ("LISTA (tied)", "lista.dp", (("learn  weights untied", "learn  weights tied"),)),
    ("LFISTA (tied)", "lfista.dp", (("learn  weights untied", "learn  weights tied"),)),
    ("SC2Net (ISTA gates)", "sc2net.dp", ()),
    ("SC2Net (Xavier gates)", "sc2net.dp", (("gates(init = ista)", "gates(init = xavier)"),)),
)
CLASSICAL = ("ISTA", "FISTA")


# --- data and dictionary ---------------------------------------------------------------------

def load_data(kind: str, seed: int = 0, n_patches: int = 3000):
    """(train, val, test) as float64 arrays of rows, and a line saying what they are."""
    rng = np.random.default_rng(seed)
    if kind == "digits":
        from sklearn.datasets import load_digits
        X = load_digits().data / 16.0
        what = "scikit-learn digits: 1797 images 8x8, pixels / 16 in [0, 1]"
    elif kind == "patches":
        from sklearn.datasets import load_sample_images
        from sklearn.feature_extraction.image import extract_patches_2d
        images = [img.mean(axis=2) / 255.0 for img in load_sample_images().images]
        per = n_patches // len(images)
        X = np.concatenate([extract_patches_2d(img, (8, 8), max_patches=per, random_state=seed + i).reshape(per, -1)
                            for i, img in enumerate(images)])
        X = X - X.mean(axis=1, keepdims=True)
        what = f"scikit-learn sample images (china, flower): {len(X)} grey 8x8 patches, each centred"
    else:
        raise SystemExit(f"unknown --data {kind}")
    X = X[rng.permutation(len(X))]
    n_val = n_test = len(X) // 6
    return X[n_val + n_test:], X[:n_val], X[n_val:n_val + n_test], what


def learn_dictionary(train, atoms, lam, iters, seed=0):
    """D (m x K), unit-norm atoms, from scikit-learn's DictionaryLearning with coordinate descent, as
    SC2Net's create_dictionary_dl (fit_algorithm='cd'; LARS took 15 times as long here)."""
    from sklearn.decomposition import DictionaryLearning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cd's per-sample convergence warnings
        dl = DictionaryLearning(n_components=atoms, alpha=lam, max_iter=iters, random_state=seed,
                                fit_algorithm="cd", transform_algorithm="lasso_cd")
        dl.fit(train)
    D = dl.components_.T
    return D / np.maximum(np.linalg.norm(D, axis=0, keepdims=True), 1e-12), dl.n_iter_


# --- networks ---------------------------------------------------------------------------------

def network_class(file: str, replacements):
    from dpc.api import compile_source
    text = (ROOT / "examples" / file).read_text()
    for old, new in replacements:
        if old not in text:
            raise SystemExit(f"examples/{file} no longer contains {old!r}")
        text = text.replace(old, new)
    namespace = {"__name__": f"dpc_sc2net_{pathlib.Path(file).stem}"}
    exec(compile(compile_source(text, file), file, "exec"), namespace)
    return next(v for v in namespace.values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
                and v.__module__ == namespace["__name__"])


def objective(D, x, z, lam):
    """Per-sample LASSO objective 0.5 ||x - D z||^2 + lam ||z||_1 (rows)."""
    return 0.5 * (x - z @ D.T).pow(2).sum(1) + lam * z.abs().sum(1)


def reconstruction(D, x, z):
    return ((x - z @ D.T).pow(2).sum() / x.pow(2).sum()).item()


def train(net, train_x, val_x, steps, lr, batch, seed, check_every=100):
    """Adam on the mean objective of the output; lr, then lr / 10 for the last 30 % of the steps; the
    parameters best on the validation objective kept. Returns (seconds, best validation objective)."""
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    with torch.no_grad():
        best = net.objective(val_x, net(val_x)).mean().item()
    best_state = {k: v.clone() for k, v in net.state_dict().items()}
    for step in range(1, steps + 1):
        if step == int(0.7 * steps) + 1:
            for group in opt.param_groups:
                group["lr"] = lr / 10
        x = train_x[torch.randint(len(train_x), (batch,), generator=g)]
        loss = net.objective(x, net(x)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % check_every == 0 or step == steps:
            with torch.no_grad():
                v = net.objective(val_x, net(val_x)).mean().item()
            if v < best:
                best, best_state = v, {k: t.clone() for k, t in net.state_dict().items()}
    net.load_state_dict(best_state)
    return time.perf_counter() - start, best


# --- report -----------------------------------------------------------------------------------

def table(title, rows, names, depths, fmt):
    lines = [f"### {title}", "", "| layers | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
    for d in depths:
        lines.append(f"| {d} | " + " | ".join(fmt(rows[n][str(d)]) if str(d) in rows[n] else "-" for n in names)
                     + " |")
    return lines + [""]


def plot(result, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for key, ax, label in (("gap", axes[0], "F(z_k) - F(z*) (test mean)"),
                           ("recon", axes[1], "||x - D z_k||² / ||x||² (test)")):
        for name, values in result[key].items():
            ks = sorted(int(k) for k in values)
            style = dict(linestyle="--", marker=None) if name in CLASSICAL else dict(linestyle="-", marker="o")
            ax.plot(ks, [max(values[str(k)], 1e-12) for k in ks], label=name, **style)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("layers / iterations k")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(result["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=("digits", "patches"), default="digits")
    ap.add_argument("--atoms", type=int, default=100, help="dictionary atoms K (SC2Net's README: 100)")
    ap.add_argument("--lam", type=float, default=0.1, help="LASSO weight (SC2Net's README: 0.1)")
    ap.add_argument("--dl-iters", type=int, default=30, help="DictionaryLearning iterations")
    ap.add_argument("--depths", default="1,2,4,8,16", help="depths of the trained networks")
    ap.add_argument("--steps", type=int, default=2000, help="Adam steps per network and depth")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--fista-iters", type=int, default=10000, help="FISTA iterations for F(z*)")
    ap.add_argument("--only", help="comma-separated network names (substrings)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="seconds: 2 depths, 30 steps, 16 atoms, 300 training images")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "runs" / "sc2net_unsupervised")
    args = ap.parse_args(argv)
    if args.smoke:
        args.depths, args.steps, args.atoms, args.dl_iters, args.fista_iters = "1,2", 30, 16, 3, 2000
    torch.set_num_threads(args.threads)
    depths = [int(d) for d in args.depths.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    log_file = open(args.out / "log.txt", "w")

    def log(text):
        print(text, flush=True)
        log_file.write(text + "\n")

    train_np, val_np, test_np, what = load_data(args.data)
    if args.smoke:
        train_np = train_np[:300]
    t0 = time.perf_counter()
    D_np, dl_iters = learn_dictionary(train_np, args.atoms, args.lam, args.dl_iters)
    dl_seconds = time.perf_counter() - t0
    log(f"data: {what}; train {len(train_np)}, validation {len(val_np)}, test {len(test_np)}")
    log(f"dictionary: DictionaryLearning(n_components={args.atoms}, alpha={args.lam}), {dl_iters} iterations, "
        f"{dl_seconds:.0f} s; threads {torch.get_num_threads()}")
    dtype = torch.float64
    D = torch.as_tensor(D_np, dtype=dtype)
    train_x, val_x, test_x = (torch.as_tensor(a, dtype=dtype) for a in (train_np, val_np, test_np))
    lam, K = args.lam, max(depths)

    # the optimum and the classical curves on the test set
    t0 = time.perf_counter()
    zs = sc.fista(D, test_x, lam, args.fista_iters)
    f_star = objective(D, test_x, zs[-1], lam).mean().item()
    f_half = objective(D, test_x, zs[len(zs) // 2 - 1], lam).mean().item()
    del zs
    log(f"F(z*) = {f_star:.8f} (FISTA {args.fista_iters} iterations, {time.perf_counter() - t0:.0f} s; "
        f"{f_half - f_star:.1e} above it at half as many)")
    gap, recon, info = {}, {}, {}
    for name, algorithm in (("ISTA", sc.ista), ("FISTA", sc.fista)):
        zs = algorithm(D, test_x, lam, K)
        gap[name] = {str(k): objective(D, test_x, zs[k - 1], lam).mean().item() - f_star for k in range(1, K + 1)}
        recon[name] = {str(k): reconstruction(D, test_x, zs[k - 1]) for k in range(1, K + 1)}
    wanted = [w.strip() for w in args.only.split(",")] if args.only else None
    for name, file, replacements in NETWORKS:
        if wanted and not any(w in name for w in wanted):
            continue
        cls = network_class(file, replacements)
        gap[name], recon[name], info[name] = {}, {}, {}
        for d in depths:
            torch.manual_seed(0)  # Xavier gates
            net = cls(D=D, lam=lam, steps=d)
            with torch.no_grad():
                untrained = net.objective(test_x, net(test_x)).mean().item() - f_star
            seconds, best_val = train(net, train_x, val_x, args.steps, args.lr, args.batch, seed=d)
            with torch.no_grad():
                z = net(test_x)
                gap[name][str(d)] = net.objective(test_x, z).mean().item() - f_star
                # the module's objective is this LASSO: checked on the test set
                assert abs(net.objective(test_x, z).mean().item() - objective(D, test_x, z, lam).mean().item()) < 1e-9
                recon[name][str(d)] = reconstruction(D, test_x, z)
            info[name][str(d)] = dict(seconds=round(seconds, 1), untrained_gap=untrained,
                                      parameters=sum(p.numel() for p in net.parameters() if p.requires_grad))
            log(f"  {name:22s} {d:2d} layers: gap {gap[name][str(d)]:.3e} (untrained {untrained:.3e}, "
                f"ISTA {gap['ISTA'][str(d)]:.3e}, FISTA {gap['FISTA'][str(d)]:.3e}), "
                f"recon {recon[name][str(d)]:.4f}  [{seconds:.0f} s]")
    total = time.perf_counter() - start
    title = (f"SC2Net's setting, {args.data}: K={args.atoms}, lam={lam}, {args.steps} Adam steps per network "
             f"and depth, test {len(test_np)}")
    result = dict(title=title, data=what, atoms=args.atoms, lam=lam, steps=args.steps, lr=args.lr, batch=args.batch,
                  depths=depths, f_star=f_star, fista_iters=args.fista_iters, dictionary_seconds=round(dl_seconds, 1),
                  dictionary_iterations=dl_iters, seconds=round(total, 1), threads=torch.get_num_threads(),
                  gap=gap, recon=recon, info=info)
    names = list(gap)
    lines = [f"# {title}", "", f"data: {what}; F(z*) = {f_star:.6f}; total {total:.0f} s "
             f"({torch.get_num_threads()} thread(s))", ""]
    lines += table("objective gap mean F(z_k) - F(z*) on the test set", gap, names, depths, lambda v: f"{v:.3e}")
    lines += table("reconstruction error sum ||x - D z_k||^2 / sum ||x||^2 on the test set", recon, names, depths,
                   lambda v: f"{v:.4f}")
    lines += ["| network | layers | seconds | untrained gap |", "| --- | --- | --- | --- |"]
    lines += [f"| {n} | {d} | {r['seconds']} | {r['untrained_gap']:.3e} |" for n, rows in info.items()
              for d, r in rows.items()]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    plotted = plot(result, args.out / "sc2net.png")
    log("\n".join(lines))
    log(f"total {total:.0f} s; wrote {args.out / 'results.md'}" + (f" and {args.out / 'sc2net.png'}" if plotted else ""))
    log_file.close()
    return result


if __name__ == "__main__":
    main()
