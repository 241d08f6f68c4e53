"""Classical Gaussian-denoising baselines on the test images of examples/image_data.py (issue 20): tuned total
variation and BM3D, PSNR and SSIM per test image and on average, as markdown tables. Measures; asserts nothing.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/denoise_baselines.py                 # sigma 15, 25, 50
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/denoise_baselines.py --sigmas 25 --json out.json
    python benchmarks/denoise_baselines.py --quick       # 64 x 64 crops, a coarse grid, no BM3D: a smoke run

- Test images: the 256 x 256 centre crops of image_data.TEST_IMAGES, noise N(0, sigma^2) with seed i for the
  i-th image (image_data.noisy_test_images(sigma)), not clipped.
- TV: skimage.restoration.denoise_tv_chambolle (isotropic TV, its default eps = 2e-4 and max_num_iter = 200)
  on the image divided by 255, times 255. Its weight is tuned on the TRAINING images only: TUNE_PATCHES
  random 128 x 128 patches (image_data.train_patches(16, 128, seed=1)), noise seed 1000 + j for patch j, the
  weight of WEIGHTS (35 values, geometric from 0.01 to 0.6, on the [0, 1] scale) with the best mean PSNR.
  The "TV oracle" row, tuned on each test image itself from the same grid, is an upper bound for TV shown
  for scale, not a baseline.
- BM3D: bm3d.bm3d(noisy, sigma_psd=sigma) (the `bm3d` package, its default profile, all stages), on the
  [0, 255] scale; its wall time per image is reported.
- PSNR and SSIM: image_data.psnr / image_data.ssim (skimage.metrics, data_range 255, the estimate clipped to
  [0, 255]; SSIM with skimage's default 7 x 7 uniform window).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import image_data as D  # noqa: E402

WEIGHTS = np.geomspace(0.01, 0.6, 35)
TUNE_PATCHES, TUNE_SIZE, TUNE_SEED = 16, 128, 1


def tv_denoise(noisy: np.ndarray, weight: float) -> np.ndarray:
    """Chambolle's TV denoising (skimage) with `weight` on the [0, 1] scale, for an image on [0, 255]."""
    from skimage.restoration import denoise_tv_chambolle
    return 255.0 * denoise_tv_chambolle(noisy / 255.0, weight=weight)


def tune_tv(sigma: float, weights=WEIGHTS, n=TUNE_PATCHES, size=TUNE_SIZE):
    """The weight of `weights` with the best mean PSNR on n noisy training patches; (weight, psnr per weight)."""
    clean = D.train_patches(n, size, seed=TUNE_SEED)
    noisy = [D.add_noise(x, sigma, seed=1000 + j) for j, x in enumerate(clean)]
    scores = np.array([np.mean([D.psnr(c, tv_denoise(y, w)) for c, y in zip(clean, noisy)]) for w in weights])
    return float(weights[int(np.argmax(scores))]), scores


def run(sigma: float, size: int, weights, do_bm3d: bool, n_tune: int, tune_size: int):
    clean = D.test_images(size)
    noisy = D.noisy_test_images(sigma, size)
    t0 = time.perf_counter()
    weight, scores = tune_tv(sigma, weights, n_tune, tune_size)
    tune_s = time.perf_counter() - t0
    at_edge = weight in (weights[0], weights[-1])
    rows = {}
    for name in clean:
        c, y = clean[name], noisy[name]
        row = {"noisy": (D.psnr(c, y), D.ssim(c, y))}
        t0 = time.perf_counter()
        tv = tv_denoise(y, weight)
        row["tv_s"] = time.perf_counter() - t0
        row["tv"] = (D.psnr(c, tv), D.ssim(c, tv))
        oracle = [D.psnr(c, tv_denoise(y, w)) for w in weights]
        best = weights[int(np.argmax(oracle))]
        row["tv_oracle"] = (max(oracle), D.ssim(c, tv_denoise(y, best)))
        row["tv_oracle_weight"] = float(best)
        if do_bm3d:
            import bm3d
            t0 = time.perf_counter()
            est = bm3d.bm3d(y, sigma_psd=sigma)
            row["bm3d_s"] = time.perf_counter() - t0
            row["bm3d"] = (D.psnr(c, est), D.ssim(c, est))
        rows[name] = row
    return {"sigma": sigma, "size": size, "tv_weight": weight, "tv_weight_at_grid_edge": at_edge,
            "tune_seconds": tune_s, "tune_scores": scores.tolist(), "images": rows}


def table(result) -> str:
    methods = [("noisy", "noisy"), ("tv", "TV (tuned)"), ("tv_oracle", "TV oracle")]
    if "bm3d" in next(iter(result["images"].values())):
        methods.append(("bm3d", "BM3D"))
    head = "| image | " + " | ".join(label for _, label in methods) + " |"
    lines = [f"sigma = {result['sigma']:g}: PSNR (dB) / SSIM; TV weight {result['tv_weight']:.4g} "
             f"(tuned on the training patches in {result['tune_seconds']:.0f} s"
             + (", AT THE EDGE OF THE GRID" if result["tv_weight_at_grid_edge"] else "") + ")", "",
             head, "|" + "---|" * (len(methods) + 1)]
    names = list(result["images"])
    for name in names + ["average"]:
        cells = []
        for key, _ in methods:
            if name == "average":
                p = np.mean([result["images"][n][key][0] for n in names])
                s = np.mean([result["images"][n][key][1] for n in names])
            else:
                p, s = result["images"][name][key]
            cells.append(f"{p:.2f} / {s:.4f}")
        label = f"**{name}**" if name == "average" else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    rows = result["images"].values()
    times = f"TV {np.mean([r['tv_s'] for r in rows]):.2f} s per image"
    if "bm3d" in next(iter(rows)):
        times += f", BM3D {np.mean([r['bm3d_s'] for r in rows]):.1f} s per image"
    oracle = ", ".join(f"{n} {result['images'][n]['tv_oracle_weight']:.3g}" for n in names)
    lines += ["", f"Wall time ({result['size']} x {result['size']}): {times}. TV oracle weights: {oracle}."]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sigmas", default="15,25,50")
    parser.add_argument("--no-bm3d", action="store_true")
    parser.add_argument("--quick", action="store_true", help="64 x 64 crops, 7 weights, 4 tuning patches, no BM3D")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    from perf_common import machine_line
    size, weights, n_tune, tune_size, do_bm3d = D.TEST_SIZE, WEIGHTS, TUNE_PATCHES, TUNE_SIZE, not args.no_bm3d
    if args.quick:
        size, weights, n_tune, tune_size, do_bm3d = 64, np.geomspace(0.02, 0.5, 7), 4, 64, False
    print(f"Machine: {machine_line()}")
    print(f"TV weight grid: {len(weights)} values, geometric from {weights[0]:g} to {weights[-1]:g} "
          f"(on the [0, 1] scale); tuned on {n_tune} training patches of {tune_size} x {tune_size}\n")
    results = []
    for sigma in [float(s) for s in args.sigmas.split(",")]:
        result = run(sigma, size, weights, do_bm3d, n_tune, tune_size)
        results.append(result)
        print(table(result) + "\n", flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
