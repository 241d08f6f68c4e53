"""LISTA on a GPU: achieved TFLOP/s of the generated module against a matmul peak measured here.

One prepared script for a machine with a CUDA GPU (CI runs only its CPU smoke test):

    python benchmarks/gpu.py [--quick] [--out DIR]
    # on a machine without dpc's compiler dependencies (lark): compile here, carry the module
    dpc compile examples/lista.dp -o runs/modules/lista.py                  # here
    python3 benchmarks/gpu.py --module runs/modules/lista.py --out OUT     # there

For each n in {500, 2000} (m = n/2), batch in {4096, 16384, 65536}, precision in
{float32, tf32, bf16}, eager and (at the largest batch) torch.compile: the forward time of a 16-layer
untied LISTA and its FLOP rate, 2*B*(m*n + (T-1)*(m*n + n*n)) FLOPs per forward. The peak is
a square matmul of the same precision timed in the same process. torch._dynamo.reset()
runs between compiled configurations (dynamo falls back to eager after 8 recompiles).
"""
import argparse
import json
import pathlib
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from perf_common import ROOT, load_generated  # noqa: E402
PRECISIONS = {"float32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}


def set_tf32(on: bool):
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def best_time(fn, repeat, device):
    """Seconds per call of fn: the best of 3 rounds of `repeat` calls, after a warm-up call
    (CUDA events on a GPU; wall clock elsewhere, for the smoke test)."""
    fn()
    if device.type != "cuda":
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(repeat):
                fn()
            best = min(best, (time.perf_counter() - start) / repeat)
        return best
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(3):
        start.record()
        for _ in range(repeat):
            fn()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3 / repeat)
    return best


def matmul_peak(precision, size, device):
    set_tf32(precision == "tf32")
    a = torch.randn(size, size, device=device, dtype=PRECISIONS[precision])
    b = torch.randn(size, size, device=device, dtype=PRECISIONS[precision])
    t = best_time(lambda: a @ b, 10, device)
    return 2 * size ** 3 / t / 1e12


def load_lista(module: str | None):
    """The generated LISTA class: compiled from examples/lista.dp by dpc, or imported from a module
    compiled earlier (--module), which needs nothing but torch."""
    if module is None:
        import dpc
        return dpc.load(ROOT / "examples" / "lista.dp")
    return load_generated(module, "dpc_gpu_lista")


def int_list(text):
    return [int(v) for v in text.split(",")]


def lista_flops(batch, m, n, T):
    return 2 * batch * (m * n + (T - 1) * (m * n + n * n))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one size per axis")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--out", default=None, help="folder for gpu.json and gpu.md")
    ap.add_argument("--module", help="a module compiled from examples/lista.dp (no dpc needed)")
    ap.add_argument("--device", default="cuda", help="cuda; cpu only to smoke-test the script")
    ap.add_argument("--sizes", type=int_list, help="comma-separated n (default 500,2000)")
    ap.add_argument("--batches", type=int_list, help="comma-separated batch sizes (default 4096,16384,65536)")
    ap.add_argument("--peak-size", type=int, default=8192, help="side of the square matmul of the peak")
    ap.add_argument("--no-compile", action="store_true", help="eager only")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA GPU (--device cpu only smoke-tests it)")
    LISTA = load_lista(args.module)
    sizes = args.sizes or ([500] if args.quick else [500, 2000])
    batches = args.batches or ([4096] if args.quick else [4096, 16384, 65536])
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{device.type} (smoke test)"
    lines = [f"GPU: {name}, torch {torch.__version__}, LISTA T={args.layers}, forward only", "",
             "| precision | matmul peak (TFLOP/s) |", "| --- | --- |"]
    peaks = {p: matmul_peak(p, args.peak_size, device) for p in PRECISIONS}
    lines += [f"| {p} | {v:.3g} |" for p, v in peaks.items()]
    lines += ["", "| n | m | batch | precision | mode | ms / forward | TFLOP/s | % of peak |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    results = []
    print("\n".join(lines), flush=True)
    for n in sizes:
        m = n // 2
        g = torch.Generator(device=device).manual_seed(0)
        D = torch.randn(m, n, device=device, generator=g) / m ** 0.5
        D = D / D.norm(dim=0)
        for precision, dtype in PRECISIONS.items():
            set_tf32(precision == "tf32")
            # built in float32 then cast, as usual in PyTorch (the SVD behind opnorm has no bf16 kernel)
            net = LISTA(D=D, lam=0.1, steps=args.layers).to(dtype).eval()
            for batch in batches:
                x = torch.randn(batch, m, device=device, dtype=dtype)
                # compiling costs tens of seconds a configuration: only at the largest batch
                compiled = batch == batches[-1] and not args.no_compile
                for mode in ("eager", "compile") if compiled else ("eager",):
                    torch._dynamo.reset()
                    fn = net if mode == "eager" else torch.compile(net)
                    try:
                        with torch.no_grad():
                            t = best_time(lambda fn=fn, x=x: fn(x), 5, device)
                    except torch.cuda.OutOfMemoryError:
                        print(f"| {n} | {m} | {batch} | {precision} | {mode} | out of memory | | |", flush=True)
                        torch.cuda.empty_cache()
                        lines.append(f"| {n} | {m} | {batch} | {precision} | {mode} | out of memory | | |")
                        continue
                    tflops = lista_flops(batch, m, n, args.layers) / t / 1e12
                    row = dict(n=n, m=m, batch=batch, precision=precision, mode=mode, ms=t * 1e3,
                               tflops=tflops, peak=peaks[precision])
                    results.append(row)
                    line = (f"| {n} | {m} | {batch} | {precision} | {mode} | {t * 1e3:.2f} | {tflops:.3g} | "
                            f"{100 * tflops / peaks[precision]:.0f}% |")
                    lines.append(line)
                    print(line, flush=True)
                del x
            del net
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu.md").write_text("\n".join(lines) + "\n")
        (out / "gpu.json").write_text(json.dumps(dict(device=name, peaks=peaks, results=results), indent=1))


if __name__ == "__main__":
    sys.exit(main())
