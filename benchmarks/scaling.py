"""How the generated LISTA's time and memory scale with depth T, size n (m = n/2) and batch.

Three sweeps around a base point (T = 16, n = 512, m = 256, batch 64), float32:
    T in 4, 8, 16, 32, 64;  n in 128, 256, 512, 1024, 2048;  batch in 1, 4, 16, 64, 256, 1024.
Per configuration, in a fresh subprocess (so one configuration's memory never inflates another's):
  forward        net(x) under torch.no_grad: median wall time of single calls (at least --min-reps calls
                 and --min-time seconds, after one warm-up call; one call only when the warm-up call took
                 longer than --slow seconds; the tables give the number of calls)
  fwd+bwd        grads set to None, net(x).square().sum().backward(): median, as above
  GFLOP/s        forward FLOPs 2*B*(m*n + (T-1)*(m*n + n*n)) / forward time
  peak memory of one forward+backward, measured as the growth of the process's peak resident set
                 (Linux VmHWM, reset through /proc/self/clear_refs) over its resident set just before the
                 call, starting with every .grad None. It counts what the call itself allocates: the saved
                 activations, the temporaries, and the gradients of W, S, theta (allocated by backward;
                 the same size as the parameters, also listed). Before measuring, glibc is told to mmap every
                 block of 64 KiB or more (mallopt M_MMAP_THRESHOLD, which also stops its adaptive threshold)
                 and to trim freed memory (malloc_trim), so freed blocks are returned to the system and
                 reused memory is not hidden. It is RSS: pages actually touched, including the allocator's
                 own overhead, at page granularity. On CUDA (--device cuda) it is instead
                 torch.cuda.max_memory_allocated() minus memory_allocated() before the call.
The module is compiled once by dpc (examples/lista.dp) into a temporary file that the subprocesses import,
so they load torch and the generated code only.

    python benchmarks/scaling.py                     # full run, estimated 2-4 minutes on 2 CPU cores
    python benchmarks/scaling.py --quick             # smoke run: two points per sweep
    python benchmarks/scaling.py --device cuda       # on a GPU (CUDA memory counters)

Measures and reports; asserts nothing. A configuration that fails (e.g. out of memory) is reported.
"""
import argparse
import ctypes
import gc
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perf_common import ROOT, load_path, machine_line, time_call  # noqa: E402

BASE = dict(T=16, n=512, batch=64)
FULL = dict(T=[4, 8, 16, 32, 64], n=[128, 256, 512, 1024, 2048], batch=[1, 4, 16, 64, 256, 1024])
QUICK = dict(T=[4, 16], n=[128, 512], batch=[1, 64])


# ------------------------------------------------------------------ child: one configuration

def _status_kb(key):
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M).group(1))


def _malloc_for_measuring():
    """Make RSS follow live memory: mmap blocks >= 64 KiB (fixed threshold), trim what is free."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def child(cfg):
    import torch
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    device = cfg["device"]
    T, n, B = cfg["T"], cfg["n"], cfg["batch"]
    m = n // 2
    LISTA = next(v for v in vars(load_path(cfg["module"], "lista_generated")).values()
                 if isinstance(v, type) and v.__module__ == "lista_generated" and issubclass(v, torch.nn.Module))
    g = torch.Generator().manual_seed(0)
    D = torch.randn(m, n, generator=g)
    D = (D / D.norm(dim=0)).to(device)
    x = torch.randn(B, m, generator=g).to(device)
    net = LISTA(D=D, lam=0.1, steps=T)
    params = list(net.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in params)

    def forward():
        with torch.no_grad():
            net(x)

    def fwd_bwd():
        for p in params:
            p.grad = None
        net(x).square().sum().backward()

    kw = dict(device=device, min_time=cfg["min_time"], min_reps=cfg["min_reps"], max_reps=1000, slow=cfg["slow"])
    t_f, k_f = time_call(forward, **kw)
    t_fb, k_fb = time_call(fwd_bwd, **kw)

    for p in params:
        p.grad = None
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fwd_bwd()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        how = "cuda max_memory_allocated"
    else:
        tuned = _malloc_for_measuring()
        before = _status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        fwd_bwd()
        peak = (_status_kb("VmHWM") - before) * 1024
        how = "VmHWM - VmRSS" + ("" if tuned else " (mallopt unavailable)")
    flops = 2 * B * (m * n + (T - 1) * (m * n + n * n))
    return dict(T=T, n=n, m=m, batch=B, forward=t_f, forward_reps=k_f, fwd_bwd=t_fb, fwd_bwd_reps=k_fb,
                gflops=flops / t_f / 1e9, peak=peak, params=param_bytes, how=how)


# ------------------------------------------------------------------ parent

def run_config(cfg, module, args):
    full = dict(cfg, module=str(module), device=args.device, threads=args.threads, min_time=args.min_time,
                min_reps=args.min_reps, slow=args.slow)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(full)],
                          capture_output=True, text=True)
    if proc.returncode:
        lines = (proc.stderr.strip() or f"exit {proc.returncode}").splitlines()
        return dict(cfg, error=f"exit {proc.returncode}: {lines[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt_t(s):
    return f"{s * 1e3:.3f}" if s < 1e-2 else f"{s * 1e3:.2f}" if s < 1 else f"{s * 1e3:.0f}"


def table(title, key, rows):
    print()
    print(f"### {title}")
    print()
    print("| T | n | m | batch | forward (ms) | fwd+bwd (ms) | fwd+bwd / forward | forward GFLOP/s "
          "| peak memory fwd+bwd (MiB) | parameters (MiB) | calls timed (fwd, fwd+bwd) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in sorted(rows, key=lambda r: r[key]):
        if "error" in r:
            print(f"| {r['T']} | {r['n']} | {r['n'] // 2} | {r['batch']} | failed: {r['error']} | | | | | | |")
            continue
        print(f"| {r['T']} | {r['n']} | {r['m']} | {r['batch']} | {fmt_t(r['forward'])} | {fmt_t(r['fwd_bwd'])} "
              f"| {r['fwd_bwd'] / r['forward']:.1f} | {r['gflops']:.1f} | {r['peak'] / 2**20:.1f} "
              f"| {r['params'] / 2**20:.1f} | {r['forward_reps']}, {r['fwd_bwd_reps']} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: two points per sweep, short timings")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the subprocesses (default: torch's)")
    ap.add_argument("--min-time", type=float, default=None, help="seconds of calls per timing (default 0.5)")
    ap.add_argument("--min-reps", type=int, default=None, help="calls per timing at least (default 3)")
    ap.add_argument("--slow", type=float, default=2.0,
                    help="a call slower than this (s) in warm-up is timed once, not --min-reps times (default 2)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    sweeps = QUICK if args.quick else FULL
    args.min_time = args.min_time if args.min_time is not None else (0.05 if args.quick else 0.5)
    args.min_reps = args.min_reps if args.min_reps is not None else (2 if args.quick else 3)
    start = time.perf_counter()
    print(f"## Scaling of the generated LISTA{' (quick smoke run)' if args.quick else ''}")
    print()
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"- machine: {machine_line()}; device {args.device}")
    print(f"- command: python benchmarks/scaling.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"- float32, untied LISTA (examples/lista.dp), base point T={BASE['T']}, n={BASE['n']}, "
          f"m=n/2, batch {BASE['batch']}; timings: median of single calls, at least {args.min_reps} calls "
          f"and {args.min_time:g} s")

    import dpc
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="dpc_scaling_"))
    try:
        module = tmp / "lista_generated.py"
        module.write_text(dpc.compile_source((ROOT / "examples" / "lista.dp").read_text(), "lista.dp"))
        done = {}
        results = {}
        for key in ("T", "n", "batch"):
            rows = []
            for value in sweeps[key]:
                cfg = dict(BASE, **{key: value})
                ident = (cfg["T"], cfg["n"], cfg["batch"])
                if ident not in done:
                    done[ident] = run_config(cfg, module, args)
                    r = done[ident]
                    print(f"  T={cfg['T']} n={cfg['n']} batch={cfg['batch']}: "
                          + (r["error"] if "error" in r else
                             f"forward {fmt_t(r['forward'])} ms, fwd+bwd {fmt_t(r['fwd_bwd'])} ms, "
                             f"peak {r['peak'] / 2**20:.1f} MiB ({r['how']})"), flush=True)
                rows.append(done[ident])
            results[key] = rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table(f"Depth T (n={BASE['n']}, m={BASE['n'] // 2}, batch {BASE['batch']})", "T", results["T"])
    table(f"Size n, m = n/2 (T={BASE['T']}, batch {BASE['batch']})", "n", results["n"])
    table(f"Batch (T={BASE['T']}, n={BASE['n']}, m={BASE['n'] // 2})", "batch", results["batch"])
    print()
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
