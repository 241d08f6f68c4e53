"""LISTA compiled by dpc against its peers on one LASSO: time per batch (forward) against accuracy.

The problem, for each size m x n (default 50x100 and 100x200):
    minimise_z 0.5 ||A z - x||^2 + lam ||z||_1,   A (m, n) fixed, Gaussian with unit-norm columns;
    x = A z0 with z0 ~ Bernoulli(0.1) * N(0, 1) (the setting of Chen et al. 2018), lam = 0.1.
x and lam are the inputs. Accuracy is the NMSE (dB) of each method's output to the exact LASSO
solution z*(x), pooled over a fixed evaluation set:  10 log10(sum ||z - z*||^2 / sum ||z*||^2).
z* is computed in float64: FISTA, then "polished" on the support it found (solve the KKT system
A_S^T A_S z_S = A_S^T x - lam sign(z_S)), kept only where the KKT conditions hold to 1e-9 lam
(more FISTA iterations otherwise); the largest KKT residual is printed.

Methods (float32 unless said; forward only, torch.no_grad; time per batch = median of single calls):
  ISTA-N, FISTA-N      hand-written, efficient (b = x A/L once, then z <- soft(b + z S, lam/L), S = I - A^T A/L)
  LISTA (dpc)          examples/lista.dp, 16 layers: untrained (= ISTA-16) and trained for --train-seconds
                       with Adam on the MSE to z* over a fixed pool of (x, z*) pairs, best validation kept
  deepinv PGD          DeepInverse's unfolded proximal gradient (deepinv.optim.PGD, unfold=True), 16 layers,
                       a step size and a lambda per layer: untrained (= ISTA-16) and trained like LISTA
  cvxpylayers          the exact differentiable convex layer (default backend: diffcp + SCS, float64),
                       timed on few repetitions; its NMSE is on the first max(--cvx-batches) evaluation samples
Then, per batch size: the number of ISTA / FISTA iterations needed to match trained LISTA's NMSE, their
time, and the speed ratio of LISTA against the fastest method that reaches its accuracy.

    python benchmarks/peers.py                      # full run, estimated 4-5 minutes on 2 CPU cores
    python benchmarks/peers.py --quick --threads 1  # smoke run, about a minute

Measures and reports; asserts nothing. Missing peers (not installed, or failing to import) are
reported with the reason and skipped.
"""
import argparse
import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import math
import os
import sys
import time
import traceback
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perf_common import ROOT, fmt_ms, ints, machine_line, parse_sizes, sparse_coding, time_call  # noqa: E402

sc = sparse_coding()


# ------------------------------------------------------------------ exact solution

@torch.no_grad()
def lasso_exact(A, X, lam, first_iters=300, max_iters=40000, tol=1e-9, chunk=4096):
    """Exact LASSO solutions of the rows of X (float64), verified by their KKT conditions.

    Returns (Z, kkt, unverified): Z (N, n) float64, kkt the largest KKT residual over the
    verified rows, unverified the number of rows left as plain FISTA iterates after max_iters."""
    A = A.double()
    X = X.double()
    G = A.T @ A
    L = torch.linalg.matrix_norm(A, ord=2).item() ** 2
    C = X @ A  # A^T x, as rows
    S = torch.eye(G.shape[0], dtype=G.dtype) - G / L
    th = lam / L
    N = X.shape[0]
    Z = torch.empty(N, A.shape[1], dtype=torch.float64)
    worst = 0.0
    todo = torch.arange(N)
    iters = first_iters
    dtype = torch.float32  # first pass in float32 (fast); later passes on the rest in float64
    while todo.numel():
        failed = []
        for lo in range(0, todo.numel(), chunk):
            idx = todo[lo:lo + chunk]
            z = _fista_rows((C[idx] / L).to(dtype), S.to(dtype), th, iters).double()
            for i, j in enumerate(idx.tolist()):
                zp, r = _polish(G, C[j], z[i], lam)
                if zp is not None and r <= tol * lam:
                    Z[j] = zp
                    worst = max(worst, r)
                else:
                    Z[j] = z[i]
                    failed.append(j)
        todo = torch.tensor(failed, dtype=torch.long)
        if iters >= max_iters:
            break
        iters, dtype = iters * 4, torch.float64
    return Z, worst, int(todo.numel())


def _fista_rows(B, S, th, iters):
    z = B - B.clamp(-th, th)
    v, t = z, 1.0
    for _ in range(iters - 1):
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        zn = torch.addmm(B, v, S)
        zn = zn - zn.clamp(-th, th)
        v = zn + ((t - 1.0) / t_next) * (zn - z)
        z, t = zn, t_next
    return z


def _polish(G, c, z, lam):
    sup = z != 0
    s = torch.sign(z[sup])
    zp = torch.zeros_like(z)
    if sup.any():
        try:
            zp[sup] = torch.linalg.solve(G[sup][:, sup], c[sup] - lam * s)
        except RuntimeError:  # singular: support too large, keep iterating
            return None, math.inf
        if not bool((torch.sign(zp[sup]) == s).all()):
            return None, math.inf
    g = G @ zp - c
    r_on = (g[sup] + lam * s).abs().max().item() if sup.any() else 0.0
    r_off = (g[~sup].abs() - lam).clamp(min=0).max().item() if (~sup).any() else 0.0
    return zp, max(r_on, r_off)


def nmse_db(z, ref):
    return sc.nmse_db(z.double(), ref.double())


# ------------------------------------------------------------------ ISTA / FISTA (hand-written, fast)

class Iterative:
    """ISTA or FISTA for the LASSO from z = 0, float32, in its cheapest form: b = x A/L once, then one
    (batch, n) x (n, n) product per iteration."""

    def __init__(self, A, lam, fast):
        L = torch.linalg.matrix_norm(A.double(), ord=2).item() ** 2
        self.W = (A.double() / L).to(A.dtype)  # (m, n): b = x @ W
        self.S = (torch.eye(A.shape[1], dtype=torch.float64) - A.double().T @ A.double() / L).to(A.dtype)
        self.th = lam / L
        self.fast = fast

    def momentum(self, N):
        c, t = [], 1.0
        for _ in range(N):
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            c.append((t - 1.0) / t_next)
            t = t_next
        return c

    @torch.no_grad()
    def __call__(self, x, N, every=None):
        """N iterations; `every(k, z)` is called after iteration k when given."""
        th, S = self.th, self.S
        b = x @ self.W
        z = b - b.clamp(-th, th)
        if every:
            every(1, z)
        if not self.fast:
            for k in range(2, N + 1):
                z = torch.addmm(b, z, S)
                z = z - z.clamp(-th, th)
                if every:
                    every(k, z)
            return z
        c = self.momentum(N)
        v = z  # t_1 = 1: the first extrapolation is z_1 itself
        for k in range(2, N + 1):
            zn = torch.addmm(b, v, S)
            zn = zn - zn.clamp(-th, th)
            v = torch.add(zn, zn - z, alpha=c[k - 1])
            z = zn
            if every:
                every(k, z)
        return z


def nmse_curve(method, X, Zref, N, chunk=1000):
    """NMSE (dB) after each of the N iterations, pooled over the rows of X."""
    err = torch.zeros(N, dtype=torch.float64)
    ref = Zref.double().pow(2).sum().item()
    for lo in range(0, X.shape[0], chunk):
        zr = Zref[lo:lo + chunk].to(X.dtype)

        def every(k, z):
            err[k - 1] += (z - zr).double().pow(2).sum()
        method(X[lo:lo + chunk], N, every)
    return [10.0 * math.log10(max(e, 1e-300) / ref) for e in err.tolist()]


# ------------------------------------------------------------------ peers: imports

class _TorchvisionStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Stands in for torchvision, which deepinv imports at top level for its image utilities: every
    torchvision module is empty and every name in it an object that raises when called. Nothing of
    deepinv.optim.PGD on vectors touches torchvision."""

    class _Missing:
        def __init__(self, name):
            self._name = name

        def __getattr__(self, attr):
            return type(self)(f"{self._name}.{attr}")

        def __call__(self, *a, **k):
            raise RuntimeError(f"{self._name}: torchvision is stubbed in benchmarks/peers.py")

        def __iter__(self):
            return iter(())

        def __mro_entries__(self, bases):
            return (object,)

    class _Module(types.ModuleType):
        def __getattr__(self, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return _TorchvisionStub._Missing(f"{self.__name__}.{attr}")

    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = self._Module(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def import_deepinv(stub_policy):
    """(module or None, one-line note)."""
    try:
        import deepinv
        return deepinv, f"deepinv {deepinv.__version__}"
    except Exception as e:  # noqa: BLE001 - report whatever stops the import
        first = f"{type(e).__name__}: {e}".splitlines()[0]
        involves_tv = "torchvision" in "".join(traceback.format_exception(e))
    if not involves_tv or stub_policy == "never":
        return None, f"deepinv not run: `import deepinv` fails ({first})"
    for name in [k for k in sys.modules if k.split(".")[0] in ("torchvision", "deepinv")]:
        del sys.modules[name]
    sys.meta_path.insert(0, _TorchvisionStub())
    try:
        import deepinv
    except Exception as e:  # noqa: BLE001
        return None, (f"deepinv not run: `import deepinv` fails ({first}), and also with torchvision "
                      f"stubbed ({type(e).__name__}: {e})")
    return deepinv, (f"deepinv {deepinv.__version__}, imported with torchvision STUBBED: `import deepinv` "
                     f"alone fails ({first}); deepinv imports torchvision at top level for image "
                     f"utilities only (the PyPI torchvision wheel is a CUDA build that cannot load "
                     f"against a CPU torch); --deepinv-stub never disables this")


def import_cvxpylayers():
    try:
        import cvxpy  # noqa: F401
        from cvxpylayers.torch import CvxpyLayer
        v = importlib.metadata.version
        return CvxpyLayer, (f"cvxpylayers {v('cvxpylayers')} (cvxpy {v('cvxpy')}, diffcp {v('diffcp')}, "
                            f"scs {v('scs')})")
    except Exception as e:  # noqa: BLE001
        return None, f"cvxpylayers not run: {type(e).__name__}: {e}".splitlines()[0]


# ------------------------------------------------------------------ peers: models

def make_deepinv_pgd(deepinv, A, lam, T):
    """DeepInverse's unfolded PGD for the LASSO on vectors: L2 data fidelity, L1 prior, a step size
    and a lambda per layer (trainable), started from z = 0 like ISTA."""
    L = torch.linalg.matrix_norm(A.double(), ord=2).item() ** 2
    n = A.shape[1]
    physics = deepinv.physics.LinearPhysics(A=lambda z: z @ A.T, A_adjoint=lambda x: x @ A)
    model = deepinv.optim.PGD(
        data_fidelity=deepinv.optim.data_fidelity.L2(), prior=deepinv.optim.prior.L1Prior(),
        lambda_reg=[lam] * T, stepsize=[1.0 / L] * T, max_iter=T, unfold=True,
        trainable_params=["lambda", "stepsize"],
        custom_init=lambda x, physics: x.new_zeros(x.shape[0], n))
    return model, physics


def make_cvxpylayer(CvxpyLayer, A, lam_nonneg=True):
    import cvxpy as cp
    m, n = A.shape
    z = cp.Variable(n)
    x = cp.Parameter(m)
    lam = cp.Parameter(nonneg=lam_nonneg)
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(A.double().numpy() @ z - x) + lam * cp.norm1(z)))
    return CvxpyLayer(problem, parameters=[x, lam], variables=[z])


# ------------------------------------------------------------------ training

def train(forward, params, Xtr, Ztr, Xval, Zval, seconds, lr, batch=64, seed=0, check_every=50):
    """Adam on the MSE to z* over minibatches of the pool (Xtr, Ztr) for `seconds` wall seconds; lr
    x1, x0.2, x0.02 over 60/25/15 % of the time; the parameters with the best validation NMSE are kept.
    Returns (steps, best validation NMSE, seconds)."""
    params = list(params)
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)

    def val():
        with torch.no_grad():
            return nmse_db(forward(Xval), Zval)

    best, best_state = val(), [p.detach().clone() for p in params]
    start = time.perf_counter()
    step = 0
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
        frac = elapsed / seconds
        for group in opt.param_groups:
            group["lr"] = lr * (1.0 if frac < 0.6 else 0.2 if frac < 0.85 else 0.02)
        idx = torch.randint(0, Xtr.shape[0], (batch,), generator=g)
        loss = torch.nn.functional.mse_loss(forward(Xtr[idx]), Ztr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % check_every == 0:
            v = val()
            if v < best:
                best, best_state = v, [p.detach().clone() for p in params]
    v = val()
    if v < best:
        best, best_state = v, [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, b in zip(params, best_state):
            p.copy_(b)
    return step, best, time.perf_counter() - start


# ------------------------------------------------------------------ one size

def run_size(m, n, args, LISTA, deepinv, CvxpyLayer, log):
    T, lam = args.layers, args.lam
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence([args.seed, m, n]).spawn(4)]
    A64 = sc.make_dictionary(m, n, seed=seeds[0], dtype=torch.float64)
    A = A64.float()
    Xev, _ = sc.sample(A64, args.eval, p=0.1, seed=seeds[1])
    Xtr, _ = sc.sample(A64, args.train_pool, p=0.1, seed=seeds[2])
    Xval, _ = sc.sample(A64, args.val, p=0.1, seed=seeds[3])
    t0 = time.perf_counter()
    Zev, k1, u1 = lasso_exact(A64, Xev, lam)
    Ztr, k2, u2 = lasso_exact(A64, Xtr, lam)
    Zval, k3, u3 = lasso_exact(A64, Xval, lam)
    log(f"  exact LASSO solutions (float64, FISTA + support polish) for {args.eval}+{args.train_pool}+"
        f"{args.val} samples in {time.perf_counter() - t0:.1f} s; largest KKT residual "
        f"{max(k1, k2, k3):.1e} (x lam = {lam}); unverified rows: {u1 + u2 + u3}")
    Xev32, Xtr32, Xval32 = Xev.float(), Xtr.float(), Xval.float()
    Ztr32, Zval32 = Ztr.float(), Zval.float()

    rows = {}  # name -> dict(nmse=..., fn=callable(x), note=...)
    ista, fista = Iterative(A, lam, fast=False), Iterative(A, lam, fast=True)
    cap = max(args.cap, max(args.iters))
    t0 = time.perf_counter()
    curves = {"ISTA": nmse_curve(ista, Xev32, Zev, cap), "FISTA": nmse_curve(fista, Xev32, Zev, cap)}
    log(f"  ISTA/FISTA NMSE curves up to {cap} iterations in {time.perf_counter() - t0:.1f} s")
    # sanity: the fast ISTA/FISTA against examples/sparse_coding.py's reference implementations
    d_i = (ista(Xev32[:64], 16) - sc.ista(A, Xev32[:64], lam, 16)[-1]).abs().max().item()
    d_f = (fista(Xev32[:64], 16) - sc.fista(A, Xev32[:64], lam, 16)[-1]).abs().max().item()
    for fam, method in (("ISTA", ista), ("FISTA", fista)):
        for N in args.iters:
            rows[f"{fam}-{N}"] = dict(nmse=curves[fam][N - 1], fn=lambda x, f=method, N=N: f(x, N))

    net0 = LISTA(D=A, lam=lam, steps=T)
    with torch.no_grad():
        d_l = (net0(Xev32[:64]) - ista(Xev32[:64], T)).abs().max().item()
        rows[f"LISTA (dpc), untrained, {T} layers"] = dict(nmse=nmse_db(net0(Xev32), Zev), fn=net0)
    log(f"  checks (max |difference|, float32): fast ISTA-16 vs examples/sparse_coding.ista {d_i:.1e}, "
        f"FISTA-16 {d_f:.1e}, untrained LISTA vs ISTA-{T} {d_l:.1e}")

    torch.manual_seed(args.seed)
    net = LISTA(D=A, lam=lam, steps=T)
    steps, val, secs = train(net, net.parameters(), Xtr32, Ztr32, Xval32, Zval32, args.train_seconds,
                             args.lr, batch=args.train_batch, seed=args.seed)
    with torch.no_grad():
        lista_nmse = nmse_db(net(Xev32), Zev)
    name_lista = f"LISTA (dpc), trained, {T} layers"
    rows[name_lista] = dict(nmse=lista_nmse, fn=net)
    count = sum(p.numel() for p in net.parameters())
    log(f"  LISTA trained: {count:,} numbers, {steps} Adam steps (batch {args.train_batch}, lr {args.lr:g}) "
        f"in {secs:.0f} s, validation NMSE {val:.2f} dB")

    if deepinv is not None:
        try:
            model0, physics = make_deepinv_pgd(deepinv, A, lam, T)
            with torch.no_grad():
                rows[f"deepinv PGD, untrained, {T} layers"] = dict(
                    nmse=nmse_db(model0(Xev32, physics), Zev), fn=lambda x, mo=model0, ph=physics: mo(x, ph))
            model, physics = make_deepinv_pgd(deepinv, A, lam, T)
            steps, val, secs = train(lambda x: model(x, physics), model.parameters(), Xtr32, Ztr32, Xval32,
                                     Zval32, args.deepinv_seconds, args.deepinv_lr, batch=args.train_batch,
                                     seed=args.seed)
            with torch.no_grad():
                rows[f"deepinv PGD, trained, {T} layers"] = dict(
                    nmse=nmse_db(model(Xev32, physics), Zev), fn=lambda x, mo=model, ph=physics: mo(x, ph))
            log(f"  deepinv PGD trained: {sum(p.numel() for p in model.parameters())} numbers, {steps} Adam "
                f"steps (lr {args.deepinv_lr:g}) in {secs:.0f} s, validation NMSE {val:.2f} dB")
        except Exception as e:  # noqa: BLE001
            log(f"  deepinv PGD failed: {type(e).__name__}: {e}".splitlines()[0])

    cvx_name = "cvxpylayers (diffcp + SCS, float64)"
    cvx_timed = [b for b in args.batches if b in args.cvx_batches]
    if CvxpyLayer is not None and cvx_timed:
        try:
            t0 = time.perf_counter()
            layer = make_cvxpylayer(CvxpyLayer, A64)
            lam_t = torch.tensor(lam, dtype=torch.float64)
            build = time.perf_counter() - t0
            nb = max(cvx_timed)
            with torch.no_grad():
                (zc,) = layer(Xev[:nb], lam_t)
            rows[cvx_name] = dict(nmse=nmse_db(zc, Zev[:nb]), fn=lambda x: layer(x.double(), lam_t)[0],
                                  note=f"NMSE on {nb} samples")
            log(f"  cvxpylayers: layer built (canonicalised) in {build:.2f} s; NMSE on the first {nb} samples")
        except Exception as e:  # noqa: BLE001
            log(f"  cvxpylayers failed: {type(e).__name__}: {e}".splitlines()[0])

    # matched accuracy: fewest ISTA / FISTA iterations reaching trained LISTA's NMSE
    matched = {}
    for fam in ("ISTA", "FISTA"):
        N = next((k + 1 for k, v in enumerate(curves[fam]) if v <= lista_nmse), None)
        matched[fam] = N
        if N is not None and f"{fam}-{N}" not in rows:
            rows[f"{fam}-{N}"] = dict(nmse=curves[fam][N - 1], fn=lambda x, f=(ista if fam == "ISTA" else fista),
                                      N=N: f(x, N), note="matches trained LISTA")
        elif N is not None:
            rows[f"{fam}-{N}"]["note"] = "matches trained LISTA"

    # timing
    times = {name: {} for name in rows}
    for B in args.batches:
        xb = Xev32[:B]
        for name, row in rows.items():
            cvx = name == cvx_name
            if cvx and B not in args.cvx_batches:
                continue
            reps = dict(min_time=0.0, min_reps=args.cvx_reps if B <= 32 else 1, max_reps=args.cvx_reps,
                        warmup=0) if cvx else dict(min_time=args.min_time, min_reps=args.min_reps)
            with torch.no_grad():
                t, k = time_call(lambda: row["fn"](xb), **reps)
            times[name][B] = (t, k)
    return dict(rows=rows, times=times, matched=matched, lista=name_lista, cap=cap, curves=curves,
                cvx=cvx_name)


def order_key(name):
    """ISTA-N, FISTA-N by N, then LISTA, deepinv, cvxpylayers (untrained first)."""
    for i, fam in enumerate(("ISTA-", "FISTA-")):
        if name.startswith(fam):
            return (i, int(name[len(fam):]))
    group = next((i for i, p in enumerate(("LISTA", "deepinv", "cvxpylayers")) if name.startswith(p)), 3)
    return (2 + group, 0 if "untrained" in name else 1)


def report(m, n, res, args, log):
    rows, times = res["rows"], res["times"]
    bs = args.batches
    log("")
    log(f"### LASSO {m}x{n}, lam = {args.lam}: forward time per batch (ms, median) and NMSE to the exact solution")
    log("")
    log("| method | NMSE vs exact (dB) | " + " | ".join(f"batch {b} (ms)" for b in bs) + " | note |")
    log("| --- | --- |" + " --- |" * len(bs) + " --- |")
    for name in sorted(rows, key=order_key):
        cells = []
        for b in bs:
            t = times[name].get(b)
            if t is None:
                cells.append("-")
            elif name == res["cvx"]:
                cells.append(f"{fmt_ms(t[0])} ({t[1]} call{'s' if t[1] != 1 else ''})")
            else:
                cells.append(fmt_ms(t[0]))
        log(f"| {name} | {rows[name]['nmse']:.2f} | " + " | ".join(cells) + f" | {rows[name].get('note', '')} |")
    lista_nmse = rows[res["lista"]]["nmse"]
    log("")
    log(f"Matched accuracy: trained LISTA reaches {lista_nmse:.2f} dB; ISTA needs "
        + (f"{res['matched']['ISTA']}" if res["matched"]["ISTA"] else f"> {res['cap']}")
        + " iterations, FISTA "
        + (f"{res['matched']['FISTA']}" if res["matched"]["FISTA"] else f"> {res['cap']}")
        + " (smallest N whose NMSE is at or below LISTA's).")
    log("")
    log("| batch | trained LISTA (ms) | ISTA matched (ms) | FISTA matched (ms) | fastest other method at LISTA's NMSE "
        "| its time / LISTA's (> 1: LISTA faster) |")
    log("| --- | --- | --- | --- | --- | --- |")
    for b in bs:
        tl = times[res["lista"]][b][0]
        cand = {}
        cells = []
        for fam in ("ISTA", "FISTA"):
            N = res["matched"][fam]
            if N is None:
                t_cap = times.get(f"{fam}-{max(args.iters)}", {}).get(b)
                cells.append(f"not reached in {res['cap']}" + (f" (N={max(args.iters)}: {fmt_ms(t_cap[0])})"
                                                               if t_cap else ""))
            else:
                t = times[f"{fam}-{N}"][b][0]
                cand[f"{fam}-{N}"] = t
                cells.append(f"{fmt_ms(t)} ({fam}-{N})")
        for name, row in rows.items():
            if name != res["lista"] and not name.startswith(("ISTA", "FISTA")) and row["nmse"] <= lista_nmse \
                    and b in times[name]:
                cand[name] = times[name][b][0]
        if cand:
            best = min(cand, key=cand.get)
            tail = f"{best} | {cand[best] / tl:.1f}x"
        else:
            tail = "none within the cap | -"
        log(f"| {b} | {fmt_ms(tl)} | {cells[0]} | {cells[1]} | {tail} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: small sets, short training, few timings")
    ap.add_argument("--sizes", type=parse_sizes, default=None, help="e.g. 50x100,100x200 (m x n)")
    ap.add_argument("--batches", type=ints, default=None, help="default 1,32,128")
    ap.add_argument("--iters", type=ints, default=None, help="ISTA/FISTA iteration counts, default 16,64,256,1024")
    ap.add_argument("--cap", type=int, default=None, help="search matched ISTA/FISTA N up to this (default 4096)")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--lam", type=float, default=0.1)
    ap.add_argument("--eval", type=int, default=None, help="evaluation samples (default 500)")
    ap.add_argument("--train-pool", type=int, default=None, help="training pairs (x, z*) (default 8000)")
    ap.add_argument("--val", type=int, default=None, help="validation pairs (default 500)")
    ap.add_argument("--train-seconds", type=float, default=None, help="LISTA training per size (default 45)")
    ap.add_argument("--lr", type=float, default=1e-3, help="LISTA's Adam learning rate (default 1e-3)")
    ap.add_argument("--train-batch", type=int, default=256, help="training minibatch (default 256)")
    ap.add_argument("--deepinv-seconds", type=float, default=None, help="deepinv PGD training per size (default 10)")
    ap.add_argument("--deepinv-lr", type=float, default=1e-2)
    ap.add_argument("--deepinv-stub", choices=("auto", "never"), default="auto",
                    help="stub torchvision when it is what stops `import deepinv` (default auto)")
    ap.add_argument("--cvx-batches", type=ints, default=None, help="batches cvxpylayers is timed on (default 1,32,128)")
    ap.add_argument("--cvx-reps", type=int, default=3, help="cvxpylayers calls per batch <= 32 (one above)")
    ap.add_argument("--no-deepinv", action="store_true")
    ap.add_argument("--no-cvxpylayers", action="store_true")
    ap.add_argument("--min-time", type=float, default=None, help="seconds of calls per timing (default 0.2)")
    ap.add_argument("--min-reps", type=int, default=None, help="calls per timing at least (default 5)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    q = args.quick
    defaults = dict(sizes=[(50, 100), (100, 200)], batches=[1, 32, 128],
                    iters=[16, 64, 256] if q else [16, 64, 256, 1024], cap=1024 if q else 4096,
                    eval=200 if q else 500, train_pool=1000 if q else 8000, val=200 if q else 500,
                    train_seconds=5.0 if q else 45.0, deepinv_seconds=3.0 if q else 10.0,
                    cvx_batches=[1] if q else [1, 32, 128], min_time=0.02 if q else 0.2, min_reps=2 if q else 5)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()

    def log(text):
        print(text, flush=True)

    import dpc
    LISTA = dpc.load(ROOT / "examples" / "lista.dp")
    deepinv, d_note = (None, "deepinv not run (--no-deepinv)") if args.no_deepinv else import_deepinv(args.deepinv_stub)
    CvxpyLayer, c_note = (None, "cvxpylayers not run (--no-cvxpylayers)") if args.no_cvxpylayers \
        else import_cvxpylayers()
    log(f"## Peers: LISTA (dpc) vs ISTA/FISTA, deepinv unfolded PGD, cvxpylayers"
        f"{' (quick smoke run)' if q else ''}")
    log("")
    log(f"- machine: {machine_line()}")
    log(f"- command: python benchmarks/peers.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    log(f"- {d_note}")
    log(f"- {c_note}")
    log(f"- float32 (cvxpylayers float64), forward only under torch.no_grad; eval {args.eval} samples, "
        f"training pool {args.train_pool}, validation {args.val}; LISTA trained {args.train_seconds:g} s per size, "
        f"deepinv PGD {args.deepinv_seconds:g} s; ISTA/FISTA matched N searched up to {args.cap}")
    for m, n in args.sizes:
        log("")
        log(f"size {m}x{n}:")
        res = run_size(m, n, args, LISTA, deepinv, CvxpyLayer, log)
        report(m, n, res, args, log)
    log("")
    log(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
