"""Fixed-point layers (`unroll until` + `backward implicit`, examples/lasso_deq.dp): memory and peers.

Part 1, memory. The LASSO layer of examples/lasso_deq.dp (m x n, batch B, float64, D and lam learned)
with `backward implicit` and with `backward unrolled`, at max = 50, 200, 800 iterations and tol = 1e-30,
so that every run does exactly `max` iterations (the table shows the count). Each configuration runs in a
fresh subprocess: one forward + backward of L = sum ||z - z0||^2, and
  - peak RSS above the RSS just before the forward (the peak is reset first, /proc/self/clear_refs,
    then read with resource.getrusage), in MiB;
  - the bytes autograd saved for backward during that forward (torch.autograd.graph.saved_tensors_hooks,
    each storage counted once), in MiB: the part of the peak that backpropagation through the loop costs;
  - the time of that one call, and how far the two gradients dL/dD differ at the same max.

Part 2, peers. The same fixed-point LASSO against cvxpylayers on the problems of benchmarks/peers.py
(sizes 50x100 and 100x200, its dictionary and the first samples of its evaluation set, lam = 0.1),
float64: time per batch of the forward (torch.no_grad) and of forward + backward, at equal gradient
accuracy. The loss is L = sum_i ||z*(x_i) - z0_i||^2 (z0 the sparse codes that made x); its gradient with
respect to the dictionary D and lam is computed independently of both layers: the exact LASSO solution
(peers.lasso_exact: FISTA, then solved on its support, KKT conditions checked to 1e-9 lam) and the
analytic implicit gradient on the support S, signs s:
    (D_S^T D_S) w = dL/dz_S,   dL/dlam = -w.s,   dL/dD = sum_i (x_i - D z_i) w_i^T - (D w_i) z_i^T.
cvxpylayers (D, x, lam parameters; diffcp + SCS at their defaults) gives a gradient with some relative
error; dpc's tol is then the loosest of a grid (1e-1, 3e-2, ..., 1e-12) where the error of dpc's
gradient is at most cvxpylayers' (the larger of the D and lam errors) and stays so at the next two
tighter tols; that layer is timed.
A row at tol 1e-10 shows the tight end. cvxpylayers at batch 128 runs only when four times its batch-32
time fits in --cvx-budget seconds; otherwise dpc at 128 is matched to cvxpylayers' batch-32 error.

    python benchmarks/fixed_point.py --threads 1     # both parts; 166 s on 2 loaded cores (load average 3-4)
    python benchmarks/fixed_point.py --quick         # smoke run at toy sizes (about 30 s there)
    python benchmarks/fixed_point.py --part memory   # or --part peers, --part adjoint

Part 3, the adjoint: backward implicit's Anderson-accelerated adjoint against the plain fixed-point adjoint
(iterations per sample, and the gradient of both) on LASSO layers that contract slower and slower.

Measures and reports; asserts nothing (tests/test_benchmarks.py runs --quick and checks what it reports).
"""
import argparse
import gc
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perf_common import (  # noqa: E402
    ROOT, fmt_ms, ints, load_generated, machine_line, parse_sizes, sparse_coding, time_call,
)

sc = sparse_coding()
LAM = 0.1
DEQ = ROOT / "examples" / "lasso_deq.dp"


# ------------------------------------------------------------------ the layer, compiled per setting

_compiled = {}


def deq_source(tol, max_iter, backward):
    """examples/lasso_deq.dp with its `unroll until(...)` and `backward ...` lines replaced."""
    text = DEQ.read_text(encoding="utf-8")
    text, n1 = re.subn(r"(?m)^unroll\s+until\(.*?\)", f"unroll until(tol = {tol!r}, max = {max_iter})", text)
    text, n2 = re.subn(r"(?m)^backward\s+\w+", f"backward {backward}", text)
    if (n1, n2) != (1, 1):
        raise RuntimeError(f"{DEQ} no longer has one `unroll until(...)` and one `backward` line")
    return text


def deq_module(tol, max_iter, backward):
    """The generated module's source (cached): tol is a compile-time constant of the .dp program."""
    key = (tol, max_iter, backward)
    if key not in _compiled:
        from dpc.api import compile_source
        _compiled[key] = compile_source(deq_source(tol, max_iter, backward), "lasso_deq.dp")
    return _compiled[key]


def deq_class(tol, max_iter=10000, backward="implicit"):
    namespace = {"__name__": "dpc_fixed_point_bench"}
    exec(compile(deq_module(tol, max_iter, backward), f"<lasso_deq tol={tol}>", "exec"), namespace)
    return next(v for v in namespace.values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
                and v.__module__ == "dpc_fixed_point_bench")


# ------------------------------------------------------------------ part 1: memory, one subprocess each

def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak():
    """Reset the peak RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child_memory(spec):
    """Runs in a fresh interpreter: one forward + backward, prints one JSON line."""
    torch.set_num_threads(spec["threads"])
    cls = load_generated(spec["module"], "dpc_fixed_point_child")
    D = sc.make_dictionary(spec["m"], spec["n"], seed=spec["seed"], dtype=torch.float64)
    X, Z0 = sc.sample(D, spec["batch"], p=0.1, seed=spec["seed"] + 1)
    net = cls(D=D, lam=LAM, constrain=False)  # lam itself the parameter: its gradient is d/dlam
    net(X[:1]).square().sum().backward()  # every kernel loaded and set up once, on one sample
    net.zero_grad(set_to_none=True)
    gc.collect()
    reset = _reset_peak()
    before_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    before = _rss_bytes()
    saved = {}

    def pack(t):
        saved[(t.untyped_storage().data_ptr(), t.device)] = t.untyped_storage().nbytes()
        return t

    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = (net(X) - Z0).square().sum()
    loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    torch.save({"D": net.D.grad, "lam": net.lam_raw.grad}, spec["grads"])
    with torch.no_grad():
        iterations = len(net(X, trace=True))
    print(json.dumps(dict(peak_above=peak - before, peak_reset=reset, peak_before=before_peak, rss_before=before,
                          saved=sum(saved.values()), seconds=seconds, iterations=iterations)))


def run_memory(args, log):
    m, n = args.mem_size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for backward in ("implicit", "unrolled"):
            for N in args.mem_iters:
                module = os.path.join(tmp, f"deq_{backward}_{N}.py")
                with open(module, "w", encoding="utf-8") as f:
                    f.write(deq_module(1e-30, N, backward))
                spec = dict(module=module, m=m, n=n, batch=args.mem_batch, seed=args.seed,
                            threads=torch.get_num_threads(), grads=os.path.join(tmp, f"g_{backward}_{N}.pt"))
                out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                                     capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    raise RuntimeError(f"memory child ({backward}, max {N}) failed:\n{out.stderr[-3000:]}")
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row.update(backward=backward, max=N, grads=torch.load(spec["grads"]))
                rows.append(row)
                log(f"  {backward:8s} max {N:4d}: {row['iterations']} iterations, peak +{row['peak_above'] / 2**20:.0f}"
                    f" MiB, saved {row['saved'] / 2**20:.1f} MiB, {row['seconds']:.2f} s")
    for row in rows:  # implicit against unrolled at the same max
        other = next(r for r in rows if r["max"] == row["max"] and r is not row)
        a, b = row["grads"]["D"], other["grads"]["D"]
        row["grad_diff"] = float((a - b).norm() / b.norm())
    for row in rows:
        row["lam_grad"] = float(row.pop("grads")["lam"])
    log("")
    log(f"### Memory of forward + backward: LASSO {m}x{n}, batch {args.mem_batch}, float64, D and lam learned, "
        f"tol 1e-30 (every run does max iterations)")
    log("")
    log("| backward | max | iterations run | peak RSS above pre-forward (MiB) | autograd saved tensors (MiB) "
        "| forward + backward, one call (s) | dL/dD: implicit vs unrolled (rel. diff.) |")
    log("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        log(f"| {row['backward']} | {row['max']} | {row['iterations']} | {row['peak_above'] / 2**20:.0f} | "
            f"{row['saved'] / 2**20:.1f} | {row['seconds']:.2f} | {row['grad_diff']:.1e} |")
    if not all(r["peak_reset"] for r in rows):
        log("\n(peak RSS could not be reset: it includes what the interpreter used before the forward)")
    return rows


# ------------------------------------------------------------------ part 2: reference gradient

def reference_gradient(A, X, Z, Z0):
    """dL/dA and dL/dlam of L = sum_i ||z_i - z0_i||^2 at exact LASSO solutions Z (rows), numpy float64:
    implicit differentiation of the optimality conditions on each support. Also returns the smallest
    strict-complementarity margin (lam - max |A^T (x - A z)| off the support) over the rows, over lam."""
    dA = np.zeros_like(A)
    dlam, margin = 0.0, math.inf
    for x, z, z0 in zip(X, Z, Z0):
        S = np.flatnonzero(z)
        off = np.setdiff1d(np.arange(A.shape[1]), S)
        r = x - A[:, S] @ z[S]
        if off.size:
            margin = min(margin, (LAM - np.abs(A[:, off].T @ r).max()) / LAM)
        if not S.size:
            continue
        AS, s = A[:, S], np.sign(z[S])
        w = np.linalg.solve(AS.T @ AS, 2.0 * (z[S] - z0[S]))
        dA[:, S] += np.outer(r, w)
        dA -= np.outer(AS @ w, z)
        dlam -= w @ s
    return dA, dlam, margin


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def make_cvx_layer(CvxpyLayer, m, n):
    import cvxpy as cp
    z, D, x = cp.Variable(n), cp.Parameter((m, n)), cp.Parameter(m)
    lam = cp.Parameter(nonneg=True)
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(D @ z - x) + lam * cp.norm1(z)))
    return CvxpyLayer(problem, parameters=[D, x, lam], variables=[z])


class Case:
    """One batch of one size: data, reference, and the layer calls with their errors."""

    def __init__(self, A, X, Z0, Zstar, ref):
        self.A, self.X, self.Z0, self.Zstar = A, X, Z0, Zstar
        self.ref_D, self.ref_lam = ref

    def errors(self, z, gD, glam):
        return dict(z=rel(z.detach(), self.Zstar), D=rel(gD, self.ref_D), lam=rel(glam, self.ref_lam))


def dpc_call(case, tol):
    net = deq_class(tol)(D=case.A, lam=LAM, constrain=False)

    def fwd():
        with torch.no_grad():
            return net(case.X)

    def fwd_bwd():
        net.zero_grad(set_to_none=True)
        z = net(case.X)
        (z - case.Z0).square().sum().backward()
        return z
    z = fwd_bwd()
    err = case.errors(z, net.D.grad, net.lam_raw.grad)
    with torch.no_grad():
        err["iterations"] = len(net(case.X, trace=True))
    return fwd, fwd_bwd, err


def cvx_call(layer, case):
    D = case.A.clone().requires_grad_()
    lam = torch.tensor(LAM, dtype=torch.float64, requires_grad=True)

    def fwd():
        with torch.no_grad():
            return layer(D, case.X, lam)[0]

    def fwd_bwd():
        D.grad = lam.grad = None
        (z,) = layer(D, case.X, lam)
        (z - case.Z0).square().sum().backward()
        return z
    return fwd, fwd_bwd, lambda z: case.errors(z, D.grad, lam.grad)


def time_slow(fn, reps):
    """Median of up to `reps` single calls (one when the first takes over 5 s); (median, calls, last value)."""
    times, value = [], None
    while len(times) < reps and (not times or times[0] <= 5.0):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), len(times), value


def matched_tol(case, target, grid, confirm=2):
    """The loosest tol of `grid` whose dpc gradient error is <= target, and so are those of the next
    `confirm` tighter ones (the error is not quite monotone in tol: a loose tol can be lucky)."""
    sweep = []
    for tol in sorted(grid, reverse=True):  # loosest first: the cheap end
        _, _, err = dpc_call(case, tol)
        sweep.append((tol, max(err["D"], err["lam"])))
        ok = [e <= target for _, e in sweep[-(confirm + 1):]]
        if len(ok) == confirm + 1 and all(ok):
            return sweep[-(confirm + 1)][0], sweep
    return None, sweep


def run_peers(args, log):
    from peers import import_cvxpylayers, lasso_exact
    CvxpyLayer, note = (None, "cvxpylayers not run (--no-cvxpylayers)") if args.no_cvxpylayers \
        else import_cvxpylayers()
    log(f"- {note}")
    grid = [10.0 ** (-k / 2) for k in range(2, 25)]  # 1e-1, 3.2e-2, ..., 1e-12
    results = []
    for m, n in args.sizes:
        seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence([args.seed, m, n]).spawn(4)]
        A = sc.make_dictionary(m, n, seed=seeds[0], dtype=torch.float64)  # as in benchmarks/peers.py
        Xall, Z0all = sc.sample(A, args.eval, p=0.1, seed=seeds[1])     # its evaluation set
        B_max = max(args.batches)
        Zstar, kkt, unverified = lasso_exact(A, Xall[:B_max], LAM)
        log("")
        log(f"size {m}x{n}: exact LASSO solutions of the first {B_max} samples of peers.py's evaluation set: "
            f"largest KKT residual {kkt:.1e} (x lam), unverified rows {unverified}")
        layer = None
        if CvxpyLayer is not None:
            t = time.perf_counter()
            layer = make_cvx_layer(CvxpyLayer, m, n)
            log(f"  cvxpylayers layer (D, x, lam parameters) built in {time.perf_counter() - t:.2f} s")
        rows, cvx_target, cvx_fb32 = [], None, None
        for B in args.batches:
            ref = reference_gradient(A.numpy(), Xall[:B].numpy(), Zstar[:B].numpy(), Z0all[:B].numpy())
            case = Case(A, Xall[:B], Z0all[:B], Zstar[:B], ref[:2])
            log(f"  batch {B}: smallest strict-complementarity margin {ref[2]:.1e} x lam")
            target_note = ""
            run_cvx = layer is not None and (B <= 32 or cvx_fb32 is None or 4 * cvx_fb32 <= args.cvx_budget)
            if layer is not None and not run_cvx:
                log(f"  cvxpylayers at batch {B} skipped: about {4 * cvx_fb32:.0f} s per call expected "
                    f"(4 x batch 32), over --cvx-budget {args.cvx_budget:g} s")
                target_note = "target: cvxpylayers' error at batch 32"
            if run_cvx:
                fwd, fwd_bwd, errors = cvx_call(layer, case)
                fwd_bwd()  # warm-up: the first call sets up diffcp's thread pool and caches
                reps = args.cvx_reps if B <= 32 else 1
                t_fb, k_fb, z = time_slow(fwd_bwd, reps)
                err = errors(z)
                t_f, k_f, _ = time_slow(fwd, reps)
                cvx_target = max(err["D"], err["lam"])
                cvx_fb32 = t_fb if B == 32 else cvx_fb32
                rows.append(dict(batch=B, method="cvxpylayers (diffcp + SCS)", err=err, fwd=t_f, fwd_bwd=t_fb,
                                 calls=f"{k_f}/{k_fb}"))
            if cvx_target is not None:
                tol, sweep = matched_tol(case, cvx_target, grid)
                log(f"  batch {B}: dpc gradient error by tol: "
                    + ", ".join(f"{t:.0e}: {e:.1e}" for t, e in sweep))
                if tol is None:
                    log(f"  batch {B}: no tol of the grid reaches cvxpylayers' error {cvx_target:.1e}")
                else:
                    rows.append(_dpc_row(case, B, tol, f"dpc implicit, matched (tol {tol:.0e})", args,
                                         target_note))
            rows.append(_dpc_row(case, B, args.tight_tol, f"dpc implicit (tol {args.tight_tol:.0e})", args, ""))
        _report(m, n, rows, log)
        results.append(dict(size=(m, n), rows=rows, kkt=kkt, unverified=unverified))
    return results


def _dpc_row(case, B, tol, name, args, note):
    fwd, fwd_bwd, err = dpc_call(case, tol)
    t_f, k_f = time_call(fwd, min_time=args.min_time, min_reps=args.min_reps)
    t_fb, k_fb = time_call(fwd_bwd, min_time=args.min_time, min_reps=args.min_reps)
    return dict(batch=B, method=name, err=err, fwd=t_f, fwd_bwd=t_fb, calls=f"{k_f}/{k_fb}", tol=tol, note=note)


def _times(ratio):
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2g}x"


def _report(m, n, rows, log):
    log("")
    log(f"### LASSO {m}x{n}, lam = {LAM}, float64: time per batch (ms, median) at equal gradient accuracy")
    log("")
    log("| batch | method | iterations | rel. error z | rel. error dL/dD | rel. error dL/dlam | forward (ms) "
        "| forward + backward (ms) | calls timed (fwd/fwd+bwd) | cvxpylayers' time / this (fwd, fwd+bwd) |")
    log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cvx = next((c for c in rows if c["batch"] == r["batch"] and c["method"].startswith("cvxpylayers")), None)
        ratio = "-" if cvx is None or cvx is r else \
            f"{_times(cvx['fwd'] / r['fwd'])}, {_times(cvx['fwd_bwd'] / r['fwd_bwd'])}"
        e = r["err"]
        iters = str(e.get("iterations", "-"))
        note = f" ({r['note']})" if r.get("note") else ""
        log(f"| {r['batch']} | {r['method']}{note} | {iters} | {e['z']:.1e} | {e['D']:.1e} | {e['lam']:.1e} | "
            f"{fmt_ms(r['fwd'])} | {fmt_ms(r['fwd_bwd'])} | {r['calls']} | {ratio} |")


# ------------------------------------------------------------------ part 3: the adjoint's iterations

def run_adjoint(args, log):
    """backward implicit's adjoint, Anderson acceleration (the generated _implicit_layer) against the plain
    fixed-point iteration (the same helper with a memory of one iterate), on LASSO layers whose ISTA
    contracts slower and slower (two dictionary columns closer and closer); float64, tol 1e-10, one sample
    per row; the gradient dL/dlam of both and their relative difference."""
    import functools
    from dpc.api import compile_source
    rows = []
    spreads = [0.3, 0.1] if args.quick else [0.3, 0.1, 0.05, 0.03]
    source = compile_source(deq_source(1e-10, 10**6, "implicit"), "lasso_deq.dp")
    namespace = {"__name__": "adjoint_bench"}
    exec(compile(source, "lasso_deq.py", "exec"), namespace)
    cls, helper = namespace["LassoDEQ"], namespace["_implicit_layer"]
    log("| D's columns 0 and 1 differ by | forward iterations | adjoint: plain | adjoint: Anderson | ratio | "
        "dL/dlam plain vs Anderson |")
    log("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for spread in spreads:
        rng = np.random.default_rng(args.seed + 1)
        m, n = 40, 20
        D = rng.standard_normal((m, n)) / np.sqrt(m)
        D[:, 1] = D[:, 0] + spread * rng.standard_normal(m) / np.sqrt(m)
        x = torch.tensor(rng.standard_normal((1, m)))
        target = torch.tensor(np.random.default_rng(3).standard_normal((1, n)))
        found = {}
        for memory in (1, 6):
            namespace["_implicit_layer"] = functools.partial(helper, memory=memory)
            net = cls(D=torch.tensor(D), lam=0.02, constrain=False)
            z, info = net(x, info=True)
            ((z - target) ** 2).sum().backward()
            found[memory] = (int(info["iterations"][0]), int(info["adjoint_iterations"][0]), float(net.lam_raw.grad))
        namespace["_implicit_layer"] = helper
        (fwd, plain, g1), (_, anderson, g6) = found[1], found[6]
        rows.append(dict(spread=spread, forward=fwd, plain=plain, anderson=anderson, grad_diff=abs(g1 - g6) / abs(g6)))
        log(f"| {spread} | {fwd} | {plain} | {anderson} | {plain / anderson:.1f}x | {abs(g1 - g6) / abs(g6):.1e} |")
    return rows


# ------------------------------------------------------------------ main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run at toy sizes")
    ap.add_argument("--part", choices=("all", "memory", "peers", "adjoint"), default="all")
    ap.add_argument("--mem-size", type=lambda s: parse_sizes(s)[0], default=None, help="m x n (default 250x500)")
    ap.add_argument("--mem-batch", type=int, default=None, help="default 64")
    ap.add_argument("--mem-iters", type=ints, default=None, help="max iterations, default 50,200,800")
    ap.add_argument("--sizes", type=parse_sizes, default=None, help="peers part, default 50x100,100x200")
    ap.add_argument("--batches", type=ints, default=None, help="default 1,32,128")
    ap.add_argument("--eval", type=int, default=500, help="peers.py's evaluation set size (its first rows are used)")
    ap.add_argument("--tight-tol", type=float, default=1e-10)
    ap.add_argument("--cvx-reps", type=int, default=3, help="cvxpylayers calls per timing at batch <= 32")
    ap.add_argument("--cvx-budget", type=float, default=40.0,
                    help="run cvxpylayers at batch > 32 only if 4x its batch-32 time is below this (s)")
    ap.add_argument("--no-cvxpylayers", action="store_true")
    ap.add_argument("--min-time", type=float, default=None, help="seconds of dpc calls per timing (default 0.2)")
    ap.add_argument("--min-reps", type=int, default=None, help="dpc calls per timing at least (default 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_memory(json.loads(args.child))
    q = args.quick
    defaults = dict(mem_size=(40, 80) if q else (250, 500), mem_batch=8 if q else 64,
                    mem_iters=[10, 40] if q else [50, 200, 800], sizes=[(20, 40)] if q else [(50, 100), (100, 200)],
                    batches=[1, 8] if q else [1, 32, 128], min_time=0.02 if q else 0.2, min_reps=2 if q else 3)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()

    def log(text):
        print(text, flush=True)

    log(f"## Fixed-point layers: examples/lasso_deq.dp{' (quick smoke run)' if q else ''}")
    log("")
    log(f"- machine: {machine_line()}")
    log(f"- command: python benchmarks/fixed_point.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    result = {}
    if args.part in ("all", "memory"):
        log("")
        log("memory (one fresh subprocess per row):")
        result["memory"] = run_memory(args, log)
    if args.part in ("all", "peers"):
        log("")
        result["peers"] = run_peers(args, log)
    if args.part in ("all", "adjoint"):
        log("")
        log("the adjoint of backward implicit (Anderson, memory 6, against the plain fixed-point iteration):")
        result["adjoint"] = run_adjoint(args, log)
    log("")
    log(f"total {time.perf_counter() - start:.0f} s, load average now {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1, default=str)
    return result


if __name__ == "__main__":
    main()
