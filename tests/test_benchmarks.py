"""Benchmark scripts run end to end at toy sizes. The prepared GPU script: CI has no GPU, so it is
smoke-tested on the CPU (its numbers mean nothing there; only that every configuration runs and is
written). The fixed-point script: what it reports that does not depend on timing (saved-tensor bytes,
iteration counts, gradient errors against its own reference) is checked."""
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


def test_fixed_point_script_smoke():
    """benchmarks/fixed_point.py --quick: implicit backward saves the same tensors whatever the number of
    iterations, unrolled saves more with more, and at a tight tol dpc's gradient matches the script's
    independent reference (the analytic implicit gradient at numpy's exact LASSO solution)."""
    fixed_point = load_benchmark("fixed_point")
    threads = torch.get_num_threads()
    try:
        result = fixed_point.main(["--quick", "--threads", "1", "--no-cvxpylayers", "--mem-iters", "10,40",
                                   "--batches", "4"])
    finally:
        torch.set_num_threads(threads)
    memory = {(r["backward"], r["max"]): r for r in result["memory"]}
    assert set(memory) == {(b, k) for b in ("implicit", "unrolled") for k in (10, 40)}
    assert all(r["iterations"] == r["max"] for r in memory.values())  # tol 1e-30: every run does max
    assert memory["implicit", 40]["saved"] == memory["implicit", 10]["saved"]
    assert memory["unrolled", 40]["saved"] > 2.5 * memory["unrolled", 10]["saved"]
    (size,) = result["peers"]
    assert size["unverified"] == 0
    (tight,) = [r for r in size["rows"] if r["method"].startswith("dpc implicit (tol")]
    assert max(tight["err"]["z"], tight["err"]["D"], tight["err"]["lam"]) < 1e-6, tight["err"]


def test_front_script_smoke(tmp_path):
    """benchmarks/front.py --quick: every network gets a test NMSE at each depth; the FISTA-N it names as
    reaching that NMSE does, by examples/sparse_coding.fista (an implementation the script does not time),
    and no lam of the grid does at N - 1; --reuse loads the saved state_dicts instead of training."""
    import math
    import sys

    front = load_benchmark("front")
    args = ["--quick", "--sizes", "20x40", "--batches", "1,8", "--nets", "LISTA-CPSS,ALISTA", "--threads", "1",
            "--out", str(tmp_path)]
    threads = torch.get_num_threads()
    try:
        (first,) = front.main(args)
        (again,) = front.main(args + ["--reuse"])
    finally:
        torch.set_num_threads(threads)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["20x40_ALISTA.pt", "20x40_LISTA-CPSS.pt"]
    assert (tmp_path / "front.png").stat().st_size > 0 and "| N | FISTA NMSE" in (tmp_path / "front.md").read_text()
    assert set(first["nets"]) == {f"{n}, {d} layers" for n in ("LISTA-CPSS", "ALISTA") for d in (4, 16)}
    assert {k: r["nmse"] for k, r in first["nets"].items()} == {k: r["nmse"] for k, r in again["nets"].items()}

    sc = sys.modules["sparse_coding_examples"]
    problem = sc.make_problem(m=20, n=40, p=0.1, snr_db=None, seed=0, n_val=100, n_test=200)
    y, x = problem.test
    lams = front.LAMS[:4]
    nmse = {lam: [sc.nmse_db(z, x) for z in sc.fista(problem.A, y, lam, 128)] for lam in lams}
    checked = 0
    for row in first["nets"].values():
        f = row["FISTA"]
        assert all(t > 0 for t in row["ms"].values())
        assert all(math.isclose(f["ratio"][b], f["ms"][b] / row["ms"][b]) for b in (1, 8))
        if f["reached"]:
            checked += 1
            assert nmse[f["lam"]][f["N"] - 1] <= row["nmse"] + 1e-3
            assert f["N"] == 1 or all(nmse[lam][f["N"] - 2] > row["nmse"] - 1e-3 for lam in lams)
        else:
            assert all(min(c) > row["nmse"] - 1e-3 for c in nmse.values())
    assert checked >= 2


def test_tv1d_learned_script_smoke(capsys):
    """benchmarks/tv1d_learned.py --quick: both networks build, train a few steps and print a row per layer."""
    import torch
    old, threads = torch.get_default_dtype(), torch.get_num_threads()
    try:
        load_benchmark("tv1d_learned").main(["--quick", "--n", "16"])
    finally:
        torch.set_default_dtype(old)
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line[:5].strip().isdigit()]
    assert len(rows) == 4 and all(len(r.split()) == 5 for r in rows), out
