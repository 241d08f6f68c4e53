"""One HQS layer of examples/deconv_shrinkage.dp: its u-step solved by the FFT (circsolve, what dpc emits for the
circulant system) against the conjugate-gradient fallback (`solve = cg(iters = k)`) at equal accuracy.

For each image size, the layer is compiled twice from the same program (unroll 1, beta fixed at the value of
stage `--stage` of the example's schedule): as written (FFT) and with `solve = cg(iters = k)`. Accuracy: the
relative difference ||u_cg - u_fft|| / ||u_fft|| of the layer's output, float64; k is the first of 5, 10, 15,
20, 30, 40, 60, 80, ... (STEPS) that reaches --tol (1e-6 by default). Speed: forward+backward (the mean square
of the output, backward to the input) of the FFT layer and of the CG layer with that k, the process's CPU time
(one thread: the work, not the waits on a loaded machine), median of --reps calls after 2 warm-ups, float32
(--dtype; torch's float64 conv2d with a 15 x 15 kernel takes a slow path, 16 times float32's time on this CPU).
The blur is a 15 x 15 Gaussian kernel (std 1.6) or a motion kernel (a line of 11 pixels at 30 degrees), each
summing to 1 (examples/train_deconv.py's generators); the images are random patches from image_data's training
images, blurred circularly, noise sigma 2.55.

    OMP_NUM_THREADS=1 python benchmarks/fft_vs_cg.py
    OMP_NUM_THREADS=1 python benchmarks/fft_vs_cg.py --quick     # tiny, seconds (a test runs it)
"""
from __future__ import annotations

import argparse
import pathlib
import re
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(HERE))
import image_data as data  # noqa: E402
import train_deconv as T  # noqa: E402


STEPS = (5, 10, 15, 20, 30, 40, 60, 80, 120, 160, 240, 320, 480, 640, 960, 1280)  # CG steps tried, in order


def layer_program(stage: int, solve: str | None) -> str:
    text = re.sub(r"(?m)^learn\b.*$", "", (ROOT / "examples" / "deconv_shrinkage.dp").read_text())
    beta0, growth = (float(x) for x in re.search(r"derive hqs\(beta = ([\d.]+), growth = ([\d.]+)\)", text).groups())
    beta = beta0 * growth ** (stage - 1)
    option = f", solve = {solve}" if solve else ""
    text = re.sub(r"derive hqs\(.*\)", f"derive hqs(beta = {beta!r}{option})", text)
    return re.sub(r"(?m)^unroll\s+\d+", "unroll 1", text)


def load(text: str, cache: dict):
    import dpc
    if text not in cache:
        path = pathlib.Path(tempfile.mkdtemp()) / "layer.dp"
        path.write_text(text)
        cache[text] = dpc.load(str(path))
    return cache[text]


def timed(net, f, reps):
    """The median CPU time of this process (time.process_time: one thread, so the work itself, not the waits
    of a machine that other jobs load) of forward+backward."""
    times = []
    for i in range(reps + 2):
        x = f.detach().clone().requires_grad_()
        t = time.process_time()
        net(x).square().mean().backward()
        if i >= 2:
            times.append(time.process_time() - t)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="64,128,256", help="image sizes (square)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--stage", type=int, default=5, help="the stage of the example's beta schedule")
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--dtype", default="float32", help="the timings' dtype (the accuracy is measured in float64)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.batch, args.reps = "24", 1, 1
    torch.set_num_threads(1)
    cache: dict = {}
    kernels = {"Gaussian": T.gaussian_kernel(1.6), "motion": T.motion_kernel(11, np.pi / 6)}
    D = torch.tensor(T.derivative_filters())
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        clean = torch.tensor(data.train_patches(args.batch, size, seed=5))
        for name, k in kernels.items():
            k = torch.tensor(k)
            f = T.blur(clean, k) + 2.55 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0),
                                                        dtype=torch.float64)
            fft = load(layer_program(args.stage, None), cache)(k=k, D=D)
            with torch.no_grad():
                want = fft(f)
            iters, err = None, None
            for k_try in STEPS:
                cg = load(layer_program(args.stage, f"cg(iters = {k_try})"), cache)(k=k, D=D)
                with torch.no_grad():
                    err = float((cg(f) - want).norm() / want.norm())
                if err <= args.tol:
                    iters = k_try
                    break
            dtype = getattr(torch, args.dtype)
            t_fft = timed(fft.to(dtype), f.to(dtype), args.reps)
            t_cg = timed(cg.to(dtype), f.to(dtype), args.reps)
            rows.append((size, name, iters if iters else f">{STEPS[-1]}", err, t_fft, t_cg))
            print(f"{args.batch} x {size} x {size}, {name}: FFT {1e3 * t_fft:.1f} ms, CG({iters}) {1e3 * t_cg:.1f} ms "
                  f"(relative difference {err:.1e}), ratio {t_cg / t_fft:.1f}", flush=True)
    print(f"\n| image | blur | CG steps to {args.tol:g} | FFT layer (ms) | CG layer (ms) | CG / FFT |")
    print("|---|---|---|---|---|---|")
    for size, name, iters, err, t_fft, t_cg in rows:
        print(f"| {args.batch} x {size} x {size} | {name} | {iters} ({err:.1e}) | {1e3 * t_fft:.1f} | "
              f"{1e3 * t_cg:.1f} | {t_cg / t_fft:.1f} |")
    print(f"\nCG steps from float64; forward+backward in {args.dtype}, CPU time (process_time), median of "
          f"{args.reps} after 2 warm-ups, 1 thread; torch {torch.__version__}")
    return rows


if __name__ == "__main__":
    main()
