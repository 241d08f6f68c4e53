"""Helpers shared by the benchmark scripts: machine description, timing,
loading examples/sparse_coding.py and compiled modules by path. Measures; asserts nothing."""
import importlib.util
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


def machine_line(threads=None) -> str:
    """One line: CPU model, cores, Python, torch version and threads (torch is imported here)."""
    import torch
    threads = torch.get_num_threads() if threads is None else threads
    load = ""
    if hasattr(os, "getloadavg"):
        load = ", load average %.2f" % os.getloadavg()[0]
    return (f"{cpu_model()}, {os.cpu_count()} cores{load}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, {threads} torch threads")


def sync(device):
    import torch
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_call(fn, device="cpu", min_time=0.2, min_reps=3, max_reps=200, warmup=1, slow=None):
    """Median wall time (s) of single calls of fn(), after `warmup` calls; repeats until both
    min_reps calls and min_time seconds are done, or max_reps calls. When `slow` is given and the
    last warm-up call took longer than `slow` seconds, a single timed call is made.
    Returns (median, reps)."""
    for _ in range(warmup):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        if slow is not None and time.perf_counter() - t > slow:
            min_reps, max_reps = 1, 1
    times = []
    total = 0.0
    while len(times) < max_reps and (len(times) < min_reps or total < min_time):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        dt = time.perf_counter() - t
        times.append(dt)
        total += dt
    return statistics.median(times), len(times)


def load_path(path, name):
    """Import a Python file by path under module name `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_generated(path, name):
    """The network class of a module dpc compiled, imported by path (it needs nothing but torch)."""
    import torch
    module = load_path(path, name)
    return next(v for v in vars(module).values()
                if isinstance(v, type) and v.__module__ == name and issubclass(v, torch.nn.Module))


def sparse_coding():
    """examples/sparse_coding.py (data generation, ISTA/FISTA, NMSE), imported by path:
    benchmarks/sparse_coding.py shares its name."""
    if "sparse_coding_examples" in sys.modules:
        return sys.modules["sparse_coding_examples"]
    return load_path(ROOT / "examples" / "sparse_coding.py", "sparse_coding_examples")


def fmt_ms(seconds) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


# --- command-line lists, shared by the benchmarks' parsers ---

def parse_sizes(text):
    """"50x100,100x200" -> [(50, 100), (100, 200)] (m x n)."""
    return [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",")]


def ints(text):
    return [int(v) for v in text.split(",") if v]


def floats(text):
    return [float(v) for v in text.split(",") if v]
