"""The prepared GPU script runs end to end: CI has no GPU, so it is smoke-tested on the CPU at toy
sizes (its numbers mean nothing there; only that every configuration runs and is written)."""
import json

import pytest
import torch

from conftest import EXAMPLES, load_benchmark
from dpc.api import compile_file


@pytest.mark.parametrize("precompiled", [False, True], ids=["dpc", "module"])
def test_gpu_script_smoke_runs_on_cpu(tmp_path, precompiled):
    gpu = load_benchmark("gpu")
    args = ["--device", "cpu", "--sizes", "20", "--batches", "8,16", "--layers", "3", "--peak-size", "64",
            "--no-compile", "--out", str(tmp_path / "out")]
    if precompiled:  # as on a GPU machine without lark: a module compiled here, imported there
        module = tmp_path / "lista.py"
        module.write_text(compile_file(str(EXAMPLES / "lista.dp")))
        args += ["--module", str(module)]
    threads = torch.get_num_threads()
    try:
        gpu.main(args)
    finally:
        torch.set_num_threads(threads)
    result = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert set(result["peaks"]) == {"float32", "tf32", "bf16"}
    rows = {(r["batch"], r["precision"], r["mode"]) for r in result["results"]}
    assert rows == {(b, p, "eager") for b in (8, 16) for p in ("float32", "tf32", "bf16")}
    assert all(r["ms"] > 0 and r["tflops"] > 0 for r in result["results"])
    table = (tmp_path / "out" / "gpu.md").read_text()
    assert table.count("| 20 | 10 |") == 6


def test_gpu_script_refuses_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        load_benchmark("gpu").main(["--sizes", "20"])
