"""A hand-written PyTorch TNRD (Chen & Pock, "Trainable nonlinear reaction diffusion", TPAMI 2017) for Gaussian
denoising, trained on the CPU on patches of examples/image_data.py's training images and evaluated on its test
images (issue 20). It is the speed reference that the compiled `examples/tnrd.dp` (not yet built) will be
measured against, and the feasibility study for its training budget. Measures; asserts nothing.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/tnrd_handwritten.py --steps 2000     # train, then test
    OMP_NUM_THREADS=1 python benchmarks/tnrd_handwritten.py --bench                     # forward+backward time
    python benchmarks/tnrd_handwritten.py --quick                                       # a smoke run (seconds)

The network (float32 for training; everything in float64 when the default dtype is float64): stage t = 1..T,
u_0 = f (the noisy image),

    u_t = u_{t-1} - ( sum_k K_tk^T phi_tk(K_tk u_{t-1}) + lam_t (u_{t-1} - f) )

- K_tk u: the correlation of u with the s x s filter K_tk (F.conv2d) on u padded by s // 2 with torch's
  'reflect' mode (the mirror image without repeating the edge pixel: scipy.ndimage's mode 'mirror'); K_tk^T is
  its exact adjoint (F.conv_transpose2d, then the reflect padding's adjoint, which folds the border back in).
- every filter has zero mean: K_tk = R_tk - mean(R_tk) of a free parameter R_tk, initialised (as in TNRD) to
  the 2-D DCT-II basis without its constant element, the lowest frequencies first (s^2 - 1 filters by default:
  24 for 5 x 5, 48 for 7 x 7); every stage starts from the same basis.
- phi_tk(z) = sum_j w_tkj exp(-(z - mu_j)^2 / (2 gamma^2)): Gaussian radial basis functions on M centres mu_j
  equally spaced on [-310, 310] (TNRD: M = 63 for images in [0, 255]), gamma = the spacing (10 for M = 63);
  its own weights per filter and per stage. Initialised by least squares (on 2001 points of [-310, 310]) to
  phi0(z) = a z / (1 + z^2 / b^2), the derivative of the Lorentzian (a b^2 / 2) log(1 + z^2 / b^2), with
  a = 0.2 / s^2 and b = 50 (--init-a, --init-b).
- lam_t: a free scalar per stage, initialised to 0.05.
Trained jointly (all stages at once) with Adam on the mean squared error of u_T on noisy patches (fresh noise
of the given sigma at every step), batches drawn from a pool of patches; learning rate --lr, halved at 60 %
and 80 % of the steps. Evaluated on the test images' 256 x 256 centre crops (image_data.noisy_test_images,
the same noisy images as benchmarks/denoise_baselines.py) by PSNR and SSIM on the estimate clipped to
[0, 255], next to the untrained network.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def dct_filters(size: int, count: int | None = None) -> torch.Tensor:
    """The orthonormal 2-D DCT-II basis of size x size patches without the constant element, the lowest
    frequencies (i + j) first: (count, 1, size, size), count = size^2 - 1 unless given."""
    n = np.arange(size)
    c = np.sqrt(2.0 / size) * np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * size))
    c[0] /= np.sqrt(2.0)  # rows: the 1-D basis vectors, orthonormal
    order = sorted(((i, j) for i in range(size) for j in range(size) if (i, j) != (0, 0)),
                   key=lambda ij: (ij[0] + ij[1], ij[0]))
    count = size * size - 1 if count is None else count
    if not 1 <= count <= size * size - 1:
        raise ValueError(f"{count} zero-mean filters of size {size}: at most {size * size - 1}")
    basis = np.stack([np.outer(c[i], c[j]) for i, j in order[:count]])
    return torch.tensor(basis[:, None], dtype=torch.get_default_dtype())


def pad_reflect_adjoint(g: torch.Tensor, p: int) -> torch.Tensor:
    """The adjoint of F.pad(., (p, p, p, p), mode='reflect') on the last two axes: (.., H+2p, W+2p) -> (.., H, W)."""
    if p == 0:
        return g
    for axis in (-1, -2):
        n = g.shape[axis] - 2 * p
        inner = g.narrow(axis, p, n).clone()
        # padded[j] = x[p - j] for j < p, padded[p + n + m] = x[n - 2 - m] for m < p
        inner.narrow(axis, 1, p).add_(g.narrow(axis, 0, p).flip(axis))
        inner.narrow(axis, n - 1 - p, p).add_(g.narrow(axis, p + n, p).flip(axis))
        g = inner
    return g


def conv(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, k, H, W): correlation with each filter of K (k, 1, s, s), reflect boundary."""
    p = K.shape[-1] // 2
    return F.conv2d(F.pad(u, (p, p, p, p), mode="reflect"), K)


def conv_adjoint(v: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """The exact adjoint of conv(., K): (B, k, H, W) -> (B, 1, H, W)."""
    return pad_reflect_adjoint(F.conv_transpose2d(v, K), K.shape[-1] // 2)


def rbf(z: torch.Tensor, w: torch.Tensor, centres: torch.Tensor, gamma: float) -> torch.Tensor:
    """phi_k(z) = sum_j w[k, j] exp(-(z - centres[j])^2 / (2 gamma^2)) for z (B, k, H, W), w (k, M)."""
    g = torch.exp(-(z.unsqueeze(-1) - centres).square() / (2.0 * gamma * gamma))  # (B, k, H, W, M)
    return torch.einsum("bkhwm,km->bkhw", g, w)


def rbf_local(z: torch.Tensor, w: torch.Tensor, centres: torch.Tensor, gamma: float, radius: int = 5):
    """rbf(z, w, centres, gamma) for equally spaced centres and gamma = their spacing, summing only the 2 * radius
    centres nearest to z: every centre left out is at least `radius` spacings away, so the result differs from
    the full sum by at most 2 * sum_{d >= radius} exp(-d^2 / 2) * max|w| (7.5e-6 max|w| for radius 5).
    Beyond the outermost centre by more than `radius` spacings, phi is that truncated sum at the clamp point
    (all its terms are below exp(-radius^2 / 2) max|w|)."""
    M, R = centres.numel(), radius
    t = ((z - centres[0]) / gamma).clamp(-R, M - 1 + R)  # position in units of the spacing: centre j at j
    n = torch.floor(t.detach())
    r = t - n  # in [0, 1): the centres n - R + 1 .. n + R are summed, at distances r - o, o = -R + 1 .. R
    o = torch.arange(-R + 1, R + 1, dtype=z.dtype, device=z.device)
    windows = F.pad(w, (2 * R, 2 * R)).unfold(1, 2 * R, 1)  # (k, M + 2R + 1, 2R): w[n - R + 1 .. n + R], 0 outside
    k = torch.arange(w.shape[0], device=z.device).view(1, -1, 1, 1)
    weights = windows[k, (n + R + 1).long()]  # (B, k, H, W, 2R)
    return (weights * torch.exp(-0.5 * (r.unsqueeze(-1) - o).square())).sum(-1)


def rbf_fit(fn, centres: torch.Tensor, gamma: float, span: float, points: int = 2001) -> torch.Tensor:
    """Least-squares RBF weights (M,) with sum_j w_j exp(-(z - c_j)^2 / (2 gamma^2)) ~ fn(z) on [-span, span]."""
    z = torch.linspace(-span, span, points, dtype=torch.float64)
    A = torch.exp(-(z[:, None] - centres.double()[None, :]).square() / (2.0 * gamma * gamma))
    return torch.linalg.lstsq(A, fn(z)[:, None]).solution[:, 0]


class TNRD(torch.nn.Module):
    def __init__(self, stages=5, size=5, filters=None, rbfs=63, span=310.0, init_a=None, init_b=50.0, lam=0.05,
                 rbf="local"):
        super().__init__()
        if rbf not in ("full", "local"):
            raise ValueError(f"rbf must be 'full' or 'local', not {rbf!r}")
        self.rbf = rbf
        basis = dct_filters(size, filters)
        k = basis.shape[0]
        self.R = torch.nn.Parameter(basis.unsqueeze(0).repeat(stages, 1, 1, 1, 1))  # (T, k, 1, s, s)
        centres = torch.linspace(-span, span, rbfs, dtype=torch.get_default_dtype())
        self.register_buffer("centres", centres)
        self.gamma = 2.0 * span / (rbfs - 1)
        a = 0.2 / size ** 2 if init_a is None else init_a
        w0 = rbf_fit(lambda z: a * z / (1 + (z / init_b) ** 2), centres, self.gamma, span)
        self.w = torch.nn.Parameter(w0.to(centres.dtype).expand(stages, k, rbfs).clone())  # (T, k, M)
        self.lam = torch.nn.Parameter(torch.full((stages,), lam, dtype=centres.dtype))

    def filters(self, t):
        R = self.R[t]
        return R - R.mean(dim=(-2, -1), keepdim=True)

    def influence(self, t, z):
        if self.rbf == "local":
            return rbf_local(z, self.w[t], self.centres, self.gamma)
        return rbf(z, self.w[t], self.centres, self.gamma)

    def forward(self, f):  # f: (B, 1, H, W) on [0, 255]
        u = f
        for t in range(self.R.shape[0]):
            K = self.filters(t)
            u = u - (conv_adjoint(self.influence(t, conv(u, K)), K) + self.lam[t] * (u - f))
        return u


def check_adjoint(size=5, h=11, w=9, seed=0) -> float:
    """|<K u, v> - <u, K^T v>| / (|K u| |v|) in float64 on a random image: the adjoint is exact (~1e-16)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(2, 1, h, w, generator=g, dtype=torch.float64)
    v = torch.randn(2, 3, h, w, generator=g, dtype=torch.float64)
    K = torch.randn(3, 1, size, size, generator=g, dtype=torch.float64)
    Ku = conv(u, K)
    return float(abs((Ku * v).sum() - (u * conv_adjoint(v, K)).sum()) / (Ku.norm() * v.norm()))


def evaluate(net, sigma, chunk=1):
    """PSNR / SSIM per test image (256 x 256 centre crops, seeded noise) of the network's output."""
    import image_data as D
    clean, noisy = D.test_images(), D.noisy_test_images(sigma)
    out = {}
    with torch.no_grad():
        for name in clean:
            y = torch.tensor(noisy[name], dtype=net.centres.dtype)[None, None]
            est = net(y)[0, 0].double().numpy()
            out[name] = (D.psnr(clean[name], est), D.ssim(clean[name], est))
    return out


def train(net, sigma, steps, batch, patch, pool, lr, seed, log_every=50, budget_s=None):
    import image_data as D
    patches = torch.tensor(D.train_patches(pool, patch, seed=seed), dtype=net.centres.dtype)[:, None]
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(0.6 * steps), int(0.8 * steps)], gamma=0.5)
    t0, history, running = time.perf_counter(), [], []
    for step in range(1, steps + 1):
        idx = torch.randint(0, pool, (batch,), generator=g)
        x = patches[idx]
        y = x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)
        loss = (net(y) - x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running.append(loss.item())
        if step % log_every == 0 or step == steps:
            mse = float(np.mean(running))
            running = []
            elapsed = time.perf_counter() - t0
            history.append((step, elapsed, mse))
            print(f"  step {step:5d}  {elapsed:7.1f} s  train PSNR {10 * math.log10(255 ** 2 / mse):6.2f} dB",
                  flush=True)
            if budget_s is not None and elapsed > budget_s:
                print(f"  stopped: the time budget of {budget_s:.0f} s is spent")
                break
    return history, time.perf_counter() - t0


def bench(args):
    """Forward + backward of the whole network on a batch of patches: median ms over --bench-reps runs."""
    net = TNRD(args.stages, args.size, args.filters, args.rbfs, rbf=args.rbf)
    x = 255 * torch.rand(args.batch, 1, args.patch, args.patch, generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(args.bench_reps + 2):
        t0 = time.perf_counter()
        net(x).square().mean().backward()
        times.append(time.perf_counter() - t0)
    ms = 1000 * float(np.median(times[2:]))
    print(f"forward+backward: {ms:.1f} ms (median of {args.bench_reps}; batch {args.batch} x {args.patch}^2, "
          f"{args.stages} stages, {net.R.shape[1]} filters {args.size}x{args.size}, {args.rbfs} RBFs ({args.rbf} sum), "
          f"{torch.get_default_dtype()})")
    return ms


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--stages", type=int, default=5)
    parser.add_argument("--size", type=int, default=5, help="filter size s (s x s)")
    parser.add_argument("--filters", type=int, default=None, help="filters per stage (default s^2 - 1)")
    parser.add_argument("--rbfs", type=int, default=63, help="RBF centres on [-310, 310]")
    parser.add_argument("--rbf", choices=("local", "full"), default="local",
                        help="sum the RBFs nearest each value (default) or all of them (the definition; slow)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--pool", type=int, default=4000, help="training patches drawn once (seeded)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budget", type=float, default=None, help="stop training once this many seconds have passed "
                        "(checked at each progress line, so the last stretch may overrun)")
    parser.add_argument("--bench", action="store_true", help="only time forward+backward")
    parser.add_argument("--bench-reps", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="2 stages, 3x3, 20 steps on 16^2 patches")
    parser.add_argument("--json", help="write the configuration, history and test results here")
    parser.add_argument("--save", help="save the trained state_dict here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from perf_common import machine_line
    print(f"Machine: {machine_line()}")
    err = check_adjoint()
    print(f"adjoint check (float64, reflect boundary): relative error {err:.1e}")
    if args.bench:
        return bench(args)
    if args.quick:
        args.stages, args.size, args.rbfs, args.steps, args.batch, args.patch, args.pool = 2, 3, 15, 20, 4, 16, 64
    torch.manual_seed(args.seed)
    net = TNRD(args.stages, args.size, args.filters, args.rbfs, rbf=args.rbf)
    config = {k: v for k, v in vars(args).items() if k not in ("json", "save")}
    print(f"TNRD: {args.stages} stages, {net.R.shape[1]} filters {args.size}x{args.size}, {args.rbfs} RBFs ({args.rbf} sum); "
          f"sigma {args.sigma:g}; {args.steps} Adam steps (lr {args.lr:g}), batch {args.batch} x "
          f"{args.patch}x{args.patch} from a pool of {args.pool} patches")
    untrained = evaluate(net, args.sigma)
    print(f"untrained: mean test PSNR {np.mean([p for p, _ in untrained.values()]):.2f} dB")
    history, seconds = train(net, args.sigma, args.steps, args.batch, args.patch, args.pool, args.lr, args.seed,
                             log_every=max(1, min(100, args.steps // 10)), budget_s=args.budget)
    trained = evaluate(net, args.sigma)
    print(f"\ntrained in {seconds:.0f} s ({seconds / history[-1][0]:.2f} s per step); test images, sigma "
          f"{args.sigma:g}, PSNR (dB) / SSIM:\n")
    print("| image | untrained | trained |\n|---|---|---|")
    for name in trained:
        print(f"| {name} | {untrained[name][0]:.2f} / {untrained[name][1]:.4f} | "
              f"{trained[name][0]:.2f} / {trained[name][1]:.4f} |")
    mean = lambda r, i: np.mean([v[i] for v in r.values()])  # noqa: E731
    print(f"| **average** | {mean(untrained, 0):.2f} / {mean(untrained, 1):.4f} | "
          f"{mean(trained, 0):.2f} / {mean(trained, 1):.4f} |")
    print(f"\nlam per stage: {', '.join(f'{v:.4f}' for v in net.lam.tolist())}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"config": config, "seconds": seconds, "history": history, "untrained": untrained,
             "trained": trained, "machine": machine_line()}, indent=1))
    if args.save:
        torch.save(net.state_dict(), args.save)
    return trained


if __name__ == "__main__":
    main()
