"""Train the TNRD that dpc compiles from tnrd.dp for Gaussian denoising, and compare it with tuned TV and BM3D.

The script

1. compiles examples/tnrd.dp with `dpc.load` (or imports the module `dpc compile examples/tnrd.dp` wrote:
   --program examples/tnrd.py) and builds TNRD(k=24, s=5): 5 stages, 24 filters of 5 x 5 per stage (the DCT
   basis without its constant element), lam per stage, and whatever influence functions the program has
   (the analytic Lorentzian rho', or learned RBF ones with `learn influence`);
2. trains it on the CPU with docs/imaging.md's recipe ("run 2" of the hand-written TNRD): Adam, learning rate
   1e-3 halved at 60 % and 80 % of the steps, 1600 steps, batches of 8 patches of 48 x 48 drawn (seeded) from
   a pool of image_data.train_patches(4000, 48, seed=0), fresh noise of the given sigma at every step, the
   mean squared error of the last stage's output; float32 (torch's default dtype), one thread by default;
3. evaluates on image_data's 256 x 256 test crops with the same noisy images as the baselines
   (image_data.noisy_test_images): PSNR and SSIM per test image and on average for the noisy image, the
   untrained network, the trained network, TV (benchmarks/denoise_baselines.py's tv_denoise with the weight
   tune_tv picks on the training images) and BM3D (the `bm3d` package, told the true sigma; its scores are
   cached in runs/bm3d_cache.json by sigma, crop size and bm3d version, so a rerun costs seconds);
4. prints a markdown table, the wall times and the machine, writes OUT/denoise_sigma<S>.json, and saves a
   figure (docs/img/denoise_sigma<S>.png): noisy / TV / TNRD / clean crops of two test images and, if the
   module has `influence_curves` (learn influence), the learned influence functions of a few filters per
   stage; otherwise the last stage's learned filters.

    python examples/train_denoise.py                       # the recipe: sigma 25, 1600 steps
    python examples/train_denoise.py --budget 1740         # ... stopped after 29 minutes of training
    python examples/train_denoise.py --steps 400           # a shorter run
    python examples/train_denoise.py --sigma 50 --no-bm3d
    python examples/train_denoise.py --analytic            # without `learn influence`: the analytic rho'
    python examples/train_denoise.py --quick --no-bm3d     # tiny sizes, seconds (the tests run it)

Measured numbers (commands, machine, wall times): docs/imaging.md, "Training the compiled TNRD".
Needs `pip install -e .[examples]` (scikit-image, scikit-learn, tqdm, matplotlib, bm3d).
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import pathlib
import sys
import time

import numpy as np
import torch

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # image_data.py lives beside this script
sys.path.insert(0, str(ROOT / "benchmarks"))  # denoise_baselines.py (TV), perf_common.py (machine line)
import image_data as D  # noqa: E402

FIGURE_IMAGES = ("camera", "gravel")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--program", default=str(HERE / "tnrd.dp"),
                    help="the .dp program, or the .py that `dpc compile` wrote (default examples/tnrd.dp)")
    ap.add_argument("--analytic", action="store_true",
                    help="train the program without its `learn influence` (the analytic rho'; a temporary copy)")
    ap.add_argument("--sigma", type=float, default=25.0, help="noise standard deviation on [0, 255]")
    ap.add_argument("--filters", type=int, default=24, help="filters per stage (k)")
    ap.add_argument("--size", type=int, default=5, help="filter size s (s x s)")
    ap.add_argument("--stages", type=int, default=5, help="stages (the network's layers)")
    ap.add_argument("--steps", type=int, default=1600, help="Adam steps")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=48, help="training patch size")
    ap.add_argument("--pool", type=int, default=4000, help="training patches drawn once (seeded)")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate, halved at 60 %% and 80 %% of the steps")
    ap.add_argument("--budget", type=float, default=None,
                    help="stop training once this many seconds of training have passed (checked every step)")
    ap.add_argument("--seed", type=int, default=0, help="the patch pool, the batches and the training noise")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--test-size", type=int, default=D.TEST_SIZE, help="test crop size (default 256)")
    ap.add_argument("--no-bm3d", action="store_true", help="leave BM3D out")
    ap.add_argument("--bm3d-cache", default=str(ROOT / "runs" / "bm3d_cache.json"),
                    help="BM3D's scores, kept by sigma, crop size and bm3d version (default runs/bm3d_cache.json)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "denoise"),
                    help="folder for the results json and checkpoints (default runs/denoise)")
    ap.add_argument("--figure", default=None,
                    help="the figure's path (default docs/img/denoise_sigma<S>.png; OUT/... with --quick)")
    ap.add_argument("--checkpoint-every", type=int, default=0,
                    help="save model and optimiser to OUT/checkpoint.pt every N steps (0: never)")
    ap.add_argument("--save", default=None, help="save the trained state_dict here")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bar (a line every 10 %% instead)")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run in seconds: 2 stages of 8 filters 5 x 5, 100 steps of 4 x 24 x 24 from a "
                         "pool of 64, 64 x 64 test crops, a coarse TV grid")
    args = ap.parse_args(argv)
    if args.quick:
        args.filters, args.size, args.stages, args.steps = 8, 5, 2, 100
        args.batch, args.patch, args.pool, args.test_size, args.lr = 4, 24, 64, 64, 1e-2
    return args


def load_network(program: str, analytic: bool = False):
    """The nn.Module class compiled from `program` (a .dp file, or a .py that dpc compile wrote). analytic: the
    program without `learn influence` (the `influence ...` item of its learn line deleted, in a temporary copy):
    the influence functions stay the analytic rho' of its objective."""
    import dpc
    if not analytic:
        return dpc.load(program)
    import re
    import tempfile
    text = pathlib.Path(program).read_text()
    plain, count = re.subn(r"^(learn\b[^#\n]*?),\s*influence\b(\([^)]*\))?(\s+(untied|tied))?", r"\1", text,
                           flags=re.MULTILINE)
    if count == 0:  # a learn line of its own: `learn influence untied`
        plain, count = re.subn(r"^learn\s+influence\b.*$", "", text, flags=re.MULTILINE)
    if count != 1:
        raise SystemExit(f"--analytic: {program} has no `learn ..., influence` item or `learn influence` line "
                         "to delete")
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / pathlib.Path(program).name
        path.write_text(plain)
        return dpc.load(str(path))


def lam_values(net):
    lam = getattr(net, "lam", None)
    if isinstance(lam, torch.nn.ParameterList):
        return [float(p.detach()) for p in lam]
    if isinstance(lam, torch.Tensor):
        return [float(v) for v in lam.detach().reshape(-1)]
    return []


def evaluate(net, clean: dict, noisy: dict) -> dict:
    """PSNR / SSIM (image_data's metrics) of the network's output on each noisy test image, and the outputs."""
    dtype = next(net.parameters()).dtype
    scores, outputs = {}, {}
    with torch.no_grad():
        for name in clean:
            y = torch.tensor(noisy[name], dtype=dtype)[None]
            est = net(y)[0].double().numpy()
            scores[name] = (D.psnr(clean[name], est), D.ssim(clean[name], est))
            outputs[name] = est
    return scores, outputs


def train(net, args, log):
    """Adam on the mean squared error of net(noisy) against the clean patch; returns (history, seconds, steps done)."""
    dtype = next(net.parameters()).dtype
    patches = torch.tensor(D.train_patches(args.pool, args.patch, seed=args.seed), dtype=dtype)
    g = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=args.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(0.6 * args.steps), int(0.8 * args.steps)], gamma=0.5)
    out = pathlib.Path(args.out)
    every = max(1, args.steps // 10)
    bar = None
    if not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(total=args.steps, desc="training", unit="step", dynamic_ncols=True)
    t0, history, running, done = time.perf_counter(), [], [], 0
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, args.pool, (args.batch,), generator=g)
        x = patches[idx]
        y = x + args.sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)
        loss = (net(y) - x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        done = step
        running.append(loss.item())
        elapsed = time.perf_counter() - t0
        if bar is not None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix_str(f"train PSNR {10 * math.log10(255 ** 2 / np.mean(running[-10:])):.2f} dB")
        if step % every == 0 or step == args.steps:
            mse = float(np.mean(running))
            running = []
            history.append((step, elapsed, mse))
            if bar is None:
                log(f"  step {step:5d}  {elapsed:7.1f} s  train PSNR {10 * math.log10(255 ** 2 / mse):6.2f} dB")
        if args.checkpoint_every and step % args.checkpoint_every == 0:
            out.mkdir(parents=True, exist_ok=True)
            torch.save({"step": step, "model": net.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "args": vars(args)}, out / "checkpoint.pt")
        if args.budget is not None and elapsed > args.budget:
            if running:
                history.append((step, elapsed, float(np.mean(running))))
            log(f"  stopped at step {step}: the time budget of {args.budget:.0f} s is spent")
            break
    if bar is not None:
        bar.close()
    return history, time.perf_counter() - t0, done


def tv_baseline(sigma, clean, noisy, quick):
    """TV with the weight tuned on training patches (benchmarks/denoise_baselines.py): (weight, scores, outputs)."""
    import denoise_baselines as B
    if quick:  # the grid and the tuning set of denoise_baselines.py --quick
        weight, _ = B.tune_tv(sigma, np.geomspace(0.02, 0.5, 7), 4, 64)
    else:
        weight, _ = B.tune_tv(sigma)
    scores, outputs = {}, {}
    for name in clean:
        est = B.tv_denoise(noisy[name], weight)
        scores[name] = (D.psnr(clean[name], est), D.ssim(clean[name], est))
        outputs[name] = est
    return weight, scores, outputs


def bm3d_baseline(sigma, clean, noisy, cache_path: pathlib.Path, log):
    """BM3D's PSNR / SSIM per image, from the cache when it has them (keyed by sigma, crop size, bm3d version)."""
    import bm3d
    from importlib.metadata import version
    key = f"sigma={sigma:g} size={next(iter(clean.values())).shape[0]} bm3d={version('bm3d')}"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    entry = cache.get(key, {})
    missing = [name for name in clean if name not in entry]
    for name in missing:
        t0 = time.perf_counter()
        est = bm3d.bm3d(noisy[name], sigma_psd=sigma)
        seconds = time.perf_counter() - t0
        entry[name] = {"psnr": D.psnr(clean[name], est), "ssim": D.ssim(clean[name], est), "seconds": seconds}
        log(f"  BM3D {name}: {seconds:.1f} s")
    if missing:
        cache[key] = entry
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(cache, indent=1))
    else:
        log(f"  BM3D: from the cache {cache_path} ({key})")
    return {name: (entry[name]["psnr"], entry[name]["ssim"]) for name in clean}, sum(
        entry[name]["seconds"] for name in missing)


def table(columns: list, names: list) -> str:
    """columns: (label, {image: (psnr, ssim)}) -> a markdown table with an average row."""
    lines = ["| image | " + " | ".join(label for label, _ in columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for name in list(names) + ["average"]:
        cells = []
        for _, scores in columns:
            if name == "average":
                p, s = np.mean([scores[n][0] for n in names]), np.mean([scores[n][1] for n in names])
            else:
                p, s = scores[name]
            cells.append(f"{p:.2f} / {s:.4f}")
        lines.append(f"| {'**average**' if name == 'average' else name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_psnr(scores):
    return float(np.mean([p for p, _ in scores.values()]))


def figure(path: pathlib.Path, net, clean, noisy, tv, tnrd, scores, sigma, crop):
    """noisy / TV / TNRD / clean crops of FIGURE_IMAGES, and the learned influence functions (or filters)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [n for n in FIGURE_IMAGES if n in clean]
    curves = None
    if hasattr(net, "influence_curves"):
        with torch.no_grad():
            z, values = net.influence_curves()
        curves = (np.asarray(torch.as_tensor(z).double()), np.asarray(torch.as_tensor(values).double()))
    stages = len(getattr(net, "K", [])) if curves is None else curves[1].shape[0]
    extra = 1 if (curves is not None or stages) else 0
    cols = max(4, stages if curves is not None else 4)
    fig = plt.figure(figsize=(3 * cols, 3 * (len(names) + extra)))
    grid = fig.add_gridspec(len(names) + extra, cols)
    for r, name in enumerate(names):
        h, w = clean[name].shape
        top, left = (h - crop) // 2, (w - crop) // 2
        panels = [("noisy", noisy[name], scores["noisy"]), ("TV (tuned)", tv[name], scores["tv"]),
                  ("TNRD (trained)", tnrd[name], scores["trained"]), ("clean", clean[name], None)]
        for c, (label, img, sc) in enumerate(panels):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(np.clip(img[top:top + crop, left:left + crop], 0, 255), cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{name}: {label}" + (f"\n{sc[name][0]:.2f} dB / {sc[name][1]:.3f}" if sc else ""),
                         fontsize=9)
            ax.axis("off")
    if curves is not None:
        z, values = curves
        for t in range(values.shape[0]):
            ax = fig.add_subplot(grid[len(names), t])
            for k in range(min(4, values.shape[1])):
                ax.plot(z, values[t, k], lw=1, label=f"filter {k + 1}")
            ax.set_title(f"stage {t + 1}: learned influence", fontsize=9)
            ax.set_xlabel("filter response z", fontsize=8)
            ax.tick_params(labelsize=7)
            if t == 0:
                ax.legend(fontsize=7)
    elif extra:
        K = np.asarray(list(net.K)[-1].detach().double())  # the last stage's filters (k, s, s)
        n = min(2 * cols, K.shape[0])
        sub = grid[len(names), :].subgridspec(1, n)
        for j in range(n):
            ax = fig.add_subplot(sub[0, j])
            ax.imshow(K[j], cmap="RdBu_r", vmin=-abs(K[j]).max(), vmax=abs(K[j]).max())
            ax.set_title(f"stage {stages}, filter {j + 1}", fontsize=8)
            ax.axis("off")
    fig.suptitle(f"Gaussian denoising, sigma = {sigma:g}: the TNRD compiled from tnrd.dp after training "
                 f"(PSNR / SSIM on the whole {next(iter(clean.values())).shape[0]}^2 crop)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    from perf_common import machine_line

    def log(text=""):
        print(text, flush=True)

    log(f"Machine: {machine_line()}")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Net = load_network(args.program, args.analytic)
    torch.manual_seed(args.seed)
    options = {"k": args.filters, "s": args.size, "steps": args.stages}
    if "a" in inspect.signature(Net).parameters:  # tnrd.dp's a = 0.2 / s^2 (0.008 for s = 5), as the hand-written
        options["a"] = 0.2 / args.size ** 2
    net = Net(**options)
    learned_influence = hasattr(net, "influence_curves")
    n_params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    log(f"{Net.__name__} from {args.program}: {args.stages} stages, {args.filters} filters {args.size}x{args.size}, "
        f"influence {'learned (influence_curves)' if learned_influence else 'analytic (the derivative of rho)'}, "
        f"{n_params} trained parameters, {torch.get_default_dtype()}")
    log(f"sigma {args.sigma:g}; {args.steps} Adam steps (lr {args.lr:g}, halved at 60 % and 80 %), batch "
        f"{args.batch} x {args.patch}x{args.patch} from a pool of {args.pool} patches (seed {args.seed}); "
        f"test crops {args.test_size}x{args.test_size}")

    clean = D.test_images(args.test_size)
    noisy = D.noisy_test_images(args.sigma, args.test_size)
    names = list(clean)
    noisy_scores = {n: (D.psnr(clean[n], noisy[n]), D.ssim(clean[n], noisy[n])) for n in names}
    t0 = time.perf_counter()
    untrained, _ = evaluate(net, clean, noisy)
    eval_s = time.perf_counter() - t0
    log(f"untrained: mean test PSNR {mean_psnr(untrained):.2f} dB ({eval_s:.1f} s for {len(names)} images)")

    history, train_s, done = train(net, args, log)
    trained, outputs = evaluate(net, clean, noisy)
    log(f"trained: {done} steps in {train_s:.0f} s ({train_s / max(done, 1):.3f} s per step); "
        f"mean test PSNR {mean_psnr(trained):.2f} dB")
    if args.save:
        torch.save(net.state_dict(), args.save)

    t0 = time.perf_counter()
    weight, tv, tv_out = tv_baseline(args.sigma, clean, noisy, args.quick)
    tv_s = time.perf_counter() - t0
    columns = [("noisy", noisy_scores), ("untrained", untrained), ("TNRD (trained)", trained),
               ("TV (tuned)", tv)]
    bm3d_scores, bm3d_s = None, 0.0
    if not args.no_bm3d:
        bm3d_scores, bm3d_s = bm3d_baseline(args.sigma, clean, noisy, pathlib.Path(args.bm3d_cache), log)
        columns.append(("BM3D", bm3d_scores))

    log(f"\nsigma = {args.sigma:g}, {len(names)} test crops of {args.test_size} x {args.test_size}: "
        f"PSNR (dB) / SSIM; TV weight {weight:.4g} (tuned on training patches)\n")
    log(table(columns, names))
    gap = f"\nTNRD (trained) - TV (tuned): {mean_psnr(trained) - mean_psnr(tv):+.2f} dB"
    if bm3d_scores is not None:
        gap += f"; TNRD (trained) - BM3D: {mean_psnr(trained) - mean_psnr(bm3d_scores):+.2f} dB"
    log(gap)
    lam = lam_values(net)
    if lam:
        log(f"lam per stage: {', '.join(f'{v:.4f}' for v in lam)}")

    fig_path = pathlib.Path(args.figure) if args.figure else (
        out / f"denoise_quick_sigma{args.sigma:g}.png" if args.quick
        else ROOT / "docs" / "img" / f"denoise_sigma{args.sigma:g}.png")
    figure(fig_path, net, clean, noisy, tv_out, outputs,
           {"noisy": noisy_scores, "tv": tv, "trained": trained}, args.sigma, min(128, args.test_size))
    total = time.perf_counter() - start
    log(f"figure: {fig_path}")
    log(f"wall time: {total:.0f} s in all (training {train_s:.0f} s, TV tuning and denoising {tv_s:.0f} s, "
        f"BM3D {'skipped' if args.no_bm3d else f'{bm3d_s:.0f} s'})")
    log(f"Machine: {machine_line()}")
    result = {"config": vars(args), "machine": machine_line(), "seconds": {"total": total, "training": train_s,
              "tv": tv_s, "bm3d": bm3d_s}, "steps_done": done, "history": history, "tv_weight": weight,
              "learned_influence": learned_influence, "lam": lam,
              "scores": {label: scores for label, scores in columns}}
    (out / f"denoise_sigma{args.sigma:g}{'_quick' if args.quick else ''}.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
