"""How long dpc takes to compile each examples/*.dp, and how long the generated module takes to import.

For every examples/*.dp:
  dpc compile      wall time of the CLI as a user runs it, `dpc compile FILE -o TMP/FILE.py --force`
                   (--force: a repeat would otherwise find the output up to date and skip the work), in a
                   subprocess (interpreter start, dpc's imports: lark, sympy, networkx; parse, passes, emit):
                   median of --reps runs
  in-process       dpc.compile_source(text) in this process once dpc and sympy are imported and warm:
                   the compiler's own work, median of --reps calls
  import           importing the generated module, measured in-process with perf_counter around
                   importlib.import_module, in a fresh interpreter that has already imported torch
                   (so torch's own import is excluded), from source (no .pyc: bytecode writing is off,
                   so the time includes compiling the module's Python source); median over --reps fresh
                   interpreters, the modules imported in a rotated order in each
For context it also times `python -c pass`, `python -c "import dpc.api"` (the compiler's imports: lark,
sympy, networkx) and `python -c "import torch"`. The CLI time is roughly interpreter start + those imports
+ the first compile in a process (which also builds the parser and warms sympy's caches) + writing the file.

    python benchmarks/compile_time.py            # full run, estimated 1.5-2 minutes on 2 CPU cores
    python benchmarks/compile_time.py --quick    # smoke run: 2 repetitions

Measures and reports; asserts nothing. An example that fails to compile is reported, not fatal.
"""
import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perf_common import ROOT, machine_line  # noqa: E402

IMPORT_SCRIPT = r"""
import importlib, json, sys, time
sys.dont_write_bytecode = True
import torch  # loaded first: its import time is not counted
sys.path.insert(0, sys.argv[1])
out = {}
for name in sys.argv[2:]:
    t = time.perf_counter()
    importlib.import_module(name)
    out[name] = time.perf_counter() - t
print(json.dumps(out))
"""


def wall(cmd, env=None, cwd=None):
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    return time.perf_counter() - t, proc


def median_wall(cmd, reps, env=None):
    times = []
    for _ in range(reps):
        dt, proc = wall(cmd, env=env)
        if proc.returncode:
            return None, proc
        times.append(dt)
    return statistics.median(times), None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 repetitions")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 5; --quick 2)")
    ap.add_argument("--examples", nargs="*", help="default: every examples/*.dp")
    args = ap.parse_args(argv)
    reps = args.reps or (2 if args.quick else 5)
    files = [pathlib.Path(f) for f in args.examples] if args.examples else sorted((ROOT / "examples").glob("*.dp"))
    dpc_exe = shutil.which("dpc")
    dpc_cmd = [dpc_exe] if dpc_exe else [sys.executable, "-m", "dpc"]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    start = time.perf_counter()

    print(f"## Compile and import time{' (quick smoke run)' if args.quick else ''}")
    print()
    print(f"- machine: {machine_line()}")
    print(f"- command: python benchmarks/compile_time.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"- CLI: {' '.join(dpc_cmd)}; medians of {reps}")
    context = {}
    for label, cmd in (("python -c pass", [sys.executable, "-c", "pass"]),
                       ("python -c 'import dpc.api'", [sys.executable, "-c", "import dpc.api"]),
                       ("python -c 'import torch'", [sys.executable, "-c", "import torch"])):
        t, failed = median_wall(cmd, reps, env)
        context[label] = t
        print(f"- {label}: " + (f"{t * 1e3:.0f} ms" if t is not None else
                                f"failed: {failed.stderr.strip().splitlines()[-1:]}"))

    import dpc
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="dpc_compile_time_"))
    try:
        rows = {}
        warmed = False
        for f in files:
            mod = "gen_" + f.stem
            target = tmp / f"{mod}.py"
            t_cli, failed = median_wall(dpc_cmd + ["compile", str(f), "-o", str(target), "--force"], reps, env)
            row = dict(cli=t_cli, error=None, inproc=None, lines=None, imp=None, name=None)
            if failed is not None:
                err = (failed.stderr.strip() or failed.stdout.strip()).splitlines()
                row["error"] = f"exit {failed.returncode}: {err[0] if err else ''}"
                rows[f] = row
                continue
            text = f.read_text()
            if not warmed:  # the first call imports sympy, lark and the passes
                dpc.compile_source(text, str(f))
                warmed = True
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                dpc.compile_source(text, str(f))
                times.append(time.perf_counter() - t)
            row["inproc"] = statistics.median(times)
            source = target.read_text()
            row["lines"] = source.count("\n")
            row["name"] = next((line.split()[1].split("(")[0].rstrip(":") for line in source.splitlines()
                                if line.startswith("class ") and "nn.Module" in line), "?")
            rows[f] = row

        mods = ["gen_" + f.stem for f, r in rows.items() if r["error"] is None]
        samples = {m: [] for m in mods}
        import_error = None
        for k in range(reps):
            order = mods[k % len(mods):] + mods[:k % len(mods)] if mods else []
            proc = subprocess.run([sys.executable, "-c", IMPORT_SCRIPT, str(tmp)] + order,
                                  capture_output=True, text=True, env=env)
            if proc.returncode:
                import_error = (proc.stderr.strip().splitlines() or ["?"])[-1]
                break
            for m, t in json.loads(proc.stdout.strip().splitlines()[-1]).items():
                samples[m].append(t)
        for f, r in rows.items():
            s = samples.get("gen_" + f.stem)
            if s:
                r["imp"] = statistics.median(s)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print("| example | network | generated lines | `dpc compile` (ms) | in-process compile_source (ms) "
          "| import after torch (ms) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for f, r in rows.items():
        if r["error"]:
            print(f"| {f.name} | - | - | failed ({r['error']}) | - | - |")
            continue
        imp = f"{r['imp'] * 1e3:.1f}" if r["imp"] is not None else "-"
        print(f"| {f.name} | {r['name']} | {r['lines']} | {r['cli'] * 1e3:.0f} | {r['inproc'] * 1e3:.0f} | {imp} |")
    if import_error:
        print(f"\nimport measurement failed: {import_error}")
    ok = [r for r in rows.values() if r["error"] is None]
    if ok:
        print()
        print(f"median over examples: dpc compile {statistics.median(r['cli'] for r in ok) * 1e3:.0f} ms, "
              f"in-process {statistics.median(r['inproc'] for r in ok) * 1e3:.0f} ms"
              + (f", import {statistics.median(r['imp'] for r in ok if r['imp']) * 1e3:.1f} ms"
                 if any(r["imp"] for r in ok) else ""))
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
