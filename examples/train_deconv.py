"""Train the learned-shrinkage deconvolution network dpc compiles from deconv_shrinkage.dp (Zuo et al. 2016).

The script

1. compiles examples/deconv_shrinkage.dp with `dpc.load` twice: as written (HQS with FFT solves and, once the
   program says `learn shrink untied`, a learned RBF shrinkage function per filter and stage), and with its
   `learn` lines removed: the untrained, classical HQS at the same number of stages;
2. generates blur kernels (15 x 15, each summing to 1): Gaussian (standard deviation 1 to 2.5) and motion-like
   line kernels (length 5 to 13 pixels, any angle, anti-aliased), half each; the training kernels with seed 0,
   the test kernels with seed 1, so no test kernel is a training one;
3. tunes lam of the classical HQS on blurred training patches (a grid, the best mean PSNR) and starts the
   learned network from the same lam;
4. trains on the CPU: Adam (learning rate 1e-2, halved at 60 % and 80 % of the steps), batches of 8 patches of
   64 x 64 from image_data.train_patches(2000, 64, seed=0), all blurred (circularly) by one training kernel
   drawn per batch, white noise of sigma (2.55 on [0, 255] by default) added fresh at every step, the mean
   squared error of the last stage; float32, one thread by default;
5. evaluates on image_data's 256 x 256 test crops, test image i blurred by test kernel i and noise seed i:
   PSNR and SSIM (image_data.psnr/ssim) per image and on average for the blurred input, the untrained HQS and
   the trained network, and prints a markdown table, wall times and the machine.

    python examples/train_deconv.py                # the recipe (about 10 minutes on one thread)
    python examples/train_deconv.py --quick        # tiny sizes, seconds (a test runs it)

Measured numbers (command, machine, wall time): docs/imaging.md, "Deconvolution: learned shrinkage".
Needs `pip install -e .[examples]` (scikit-image, scikit-learn, tqdm).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "benchmarks"))
import image_data as data  # noqa: E402

KERNEL_SIZE = 15


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--program", default=str(HERE / "deconv_shrinkage.dp"), help="the .dp program")
    ap.add_argument("--sigma", type=float, default=2.55, help="noise standard deviation on [0, 255]")
    ap.add_argument("--stages", type=int, default=None, help="stages (default: the program's unroll)")
    ap.add_argument("--steps", type=int, default=600, help="Adam steps")
    ap.add_argument("--batch", type=int, default=8, help="patches per batch")
    ap.add_argument("--patch", type=int, default=64, help="patch size")
    ap.add_argument("--lr", type=float, default=1e-2, help="Adam's learning rate (the RBF weights are of the size "
                    "of the thresholds, up to 20)")
    ap.add_argument("--kernels", type=int, default=24, help="training kernels")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--test-size", type=int, default=data.TEST_SIZE, help="test crop size")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: seconds (for the tests)")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.batch, args.patch, args.kernels, args.test_size = 6, 2, 32, 3, 48
    return args


# --- kernels, blur, derivative filters -----------------------------------------------------------

def gaussian_kernel(std: float, size: int = KERNEL_SIZE) -> np.ndarray:
    r = np.arange(size) - size // 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * std ** 2))
    return g / g.sum()


def motion_kernel(length: float, angle: float, size: int = KERNEL_SIZE) -> np.ndarray:
    """A line of `length` pixels through the centre at `angle`, splatted bilinearly from 8 samples a pixel."""
    k = np.zeros((size, size))
    c = size // 2
    for s in np.linspace(-length / 2, length / 2, int(8 * length) + 1):
        y, x = c + s * np.sin(angle), c + s * np.cos(angle)
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
            wgt = (1 - abs(y - y0 - dy)) * (1 - abs(x - x0 - dx))
            if 0 <= y0 + dy < size and 0 <= x0 + dx < size:
                k[y0 + dy, x0 + dx] += wgt
    return k / k.sum()


def kernels(n: int, seed: int) -> list[np.ndarray]:
    """n kernels, alternately Gaussian (std 1 to 2.5) and motion (length 5 to 13, angle in [0, pi))."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append(gaussian_kernel(rng.uniform(1.0, 2.5)))
        else:
            out.append(motion_kernel(rng.uniform(5, 13), rng.uniform(0, np.pi)))
    return out


def derivative_filters() -> np.ndarray:
    """The two forward differences u[i, j+1] - u[i, j] and u[i+1, j] - u[i, j] as 3 x 3 filters (the centre
    is [1, 1], conv's correlation convention)."""
    D = np.zeros((2, 3, 3))
    D[0, 1, 1], D[0, 1, 2] = -1, 1
    D[1, 1, 1], D[1, 2, 1] = -1, 1
    return D


def blur(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Circular correlation of images (batch, h, w) with one kernel (s, s), the centre at (s - 1) // 2: the
    model's conv(k, u, pad = circular), written here with F.pad and F.conv2d."""
    s = k.shape[-1]
    x = F.pad(u[:, None], ((s - 1) // 2, s // 2, (s - 1) // 2, s // 2), mode="circular")
    return F.conv2d(x, k[None, None])[:, 0]


# --- the networks ----------------------------------------------------------------------------------

def load_networks(program: str, stages: int | None):
    """(class as written, class without its learn lines, whether the program learns anything)."""
    import dpc
    text = pathlib.Path(program).read_text()
    plain = re.sub(r"(?m)^learn\b.*$", "", text)
    if stages is not None:
        text = re.sub(r"(?m)^unroll\s+\d+", f"unroll {stages}", text)
        plain = re.sub(r"(?m)^unroll\s+\d+", f"unroll {stages}", plain)
    tmp = pathlib.Path(tempfile.mkdtemp())
    (tmp / "learned.dp").write_text(text)
    (tmp / "plain.dp").write_text(plain)
    return dpc.load(str(tmp / "learned.dp")), dpc.load(str(tmp / "plain.dp")), plain != text


def build(cls, kernel, lam):
    return cls(k=torch.as_tensor(kernel, dtype=torch.float32), D=torch.as_tensor(derivative_filters(),
                                                                                  dtype=torch.float32), lam=lam)


def evaluate(net, pairs) -> list[tuple[float, float]]:
    """(PSNR, SSIM) of net on each (clean, blurred, kernel)."""
    out = []
    with torch.no_grad():
        for clean, blurred, k in pairs:
            net.k = torch.as_tensor(k, dtype=torch.float32)
            u = net(torch.as_tensor(blurred, dtype=torch.float32)[None])[0].double().numpy()
            out.append((data.psnr(clean, u), data.ssim(clean, u)))
    return out


def make_pairs(images: dict, kernel_list, sigma, seed0=0):
    pairs = []
    for i, (name, clean) in enumerate(images.items()):
        k = kernel_list[i % len(kernel_list)]
        b = blur(torch.as_tensor(clean)[None], torch.as_tensor(k))[0].numpy()
        pairs.append((clean, data.add_noise(b, sigma, seed=seed0 + i), k))
    return pairs


def tune_lam(plain_cls, pairs, grid) -> tuple[float, dict]:
    scores = {}
    for lam in grid:
        net = build(plain_cls, pairs[0][2], lam)
        scores[lam] = float(np.mean([p for p, _ in evaluate(net, pairs)]))
    return max(scores, key=scores.get), scores


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from tqdm import tqdm
    start = time.time()
    learned_cls, plain_cls, learns = load_networks(args.program, args.stages)
    train_k, test_k = kernels(args.kernels, seed=0), kernels(5, seed=1)

    # lam of the classical HQS, tuned on blurred training patches (never on the test images)
    tune_images = {f"p{i}": p for i, p in enumerate(data.train_patches(4 if args.quick else 16, 96 if not args.quick
                                                                        else 32, seed=1))}
    tune_pairs = make_pairs(tune_images, train_k, args.sigma, seed0=1000)
    grid = [0.05, 0.2, 0.8] if args.quick else [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2]
    lam, scores = tune_lam(plain_cls, tune_pairs, grid)
    print(f"lam of the classical HQS, tuned on {len(tune_pairs)} training patches: {lam} "
          f"(mean PSNR {', '.join(f'{g}: {s:.2f}' for g, s in scores.items())})")
    tuned = time.time() - start

    net = build(learned_cls, train_k[0], lam)
    params = [p for p in net.parameters() if p.requires_grad]
    print(f"learned values: {sum(p.numel() for p in params)} numbers"
          + ("" if learns else " (the program learns nothing: the trained network is the untrained one)"))
    patches = torch.as_tensor(data.train_patches(200 if args.quick else 2000, args.patch, seed=0), dtype=torch.float32)
    kernels_t = [torch.as_tensor(k, dtype=torch.float32) for k in train_k]
    gen = torch.Generator().manual_seed(0)
    losses = []
    t0 = time.time()
    if params:
        opt = torch.optim.Adam(params, lr=args.lr)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(0.6 * args.steps), int(0.8 * args.steps)], 0.5)
        bar = tqdm(range(args.steps), desc="train", mininterval=5, disable=args.quick)
        for step in bar:
            idx = torch.randint(len(patches), (args.batch,), generator=gen)
            k = kernels_t[int(torch.randint(len(kernels_t), (1,), generator=gen))]
            clean = patches[idx]
            f = blur(clean, k) + args.sigma * torch.randn(clean.shape, generator=gen)
            net.k = k
            loss = (net(f) - clean).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            if step % 50 == 0 or step == args.steps - 1:
                bar.set_postfix(mse=f"{np.mean(losses[-50:]):.2f}")
    trained_s = time.time() - t0

    images = data.test_images(args.test_size)
    pairs = make_pairs(images, test_k, args.sigma)
    blurred = [(data.psnr(c, b), data.ssim(c, b)) for c, b, _ in pairs]
    untrained = evaluate(build(plain_cls, test_k[0], lam), pairs)
    trained = evaluate(net, pairs)
    stages = net.steps
    rows = [("image", "kernel", "blurred", f"HQS, {stages} stages (lam {lam})", f"learned shrinkage, {stages} stages")]
    for i, name in enumerate(images):
        kind = "Gaussian" if i % 2 == 0 else "motion"
        rows.append((name, kind, *(f"{r[i][0]:.2f} / {r[i][1]:.4f}" for r in (blurred, untrained, trained))))
    rows.append(("**average**", "", *(f"{np.mean([x[0] for x in r]):.2f} / {np.mean([x[1] for x in r]):.4f}"
                                       for r in (blurred, untrained, trained))))
    print()
    for j, row in enumerate(rows):
        print("| " + " | ".join(row) + " |")
        if j == 0:
            print("|" + "---|" * len(row))
    gain = np.mean([x[0] for x in trained]) - np.mean([x[0] for x in untrained])
    print(f"\nlearned shrinkage - untrained HQS: {gain:+.2f} dB PSNR (average of {len(pairs)} test images)")
    print(f"wall time: tuning {tuned:.0f} s, training {trained_s:.0f} s ({args.steps} steps), total "
          f"{time.time() - start:.0f} s; torch {torch.__version__}, {args.threads} thread(s)")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({
            "lam": lam, "tuning": scores, "blurred": blurred, "untrained": untrained, "trained": trained,
            "images": list(images), "steps": args.steps, "sigma": args.sigma, "stages": stages,
            "train_seconds": trained_s, "losses": losses}, indent=1))
    return {"untrained": untrained, "trained": trained, "blurred": blurred, "gain": gain}


if __name__ == "__main__":
    main()
