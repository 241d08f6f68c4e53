"""What a newcomer meets first: the README's training script, honest output, a clean `git status`,
documentation that stays inside the repository, and what `objective()` means under constraints."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import EXAMPLES, ROOT, build


def _script(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_lista_smoke_run_prints_the_verdict_and_saves_the_plot(tmp_path):
    plot = tmp_path / "nmse.png"
    result = subprocess.run([sys.executable, str(EXAMPLES / "train_lista.py"), "--smoke", "--threads", "1",
                             "--plot", str(plot)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "lam search for ISTA and FISTA" in out
    verdict = re.search(r"LISTA is below ISTA and FISTA at (\d+) of 4 layers", out)
    assert verdict, out
    assert f"plot: {plot}" in out
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize("load, cores, expected", [(0.1, 2, 2), (1.9, 2, 1), (6.0, 2, 1), (1.0, 4, 3)])
def test_train_lista_uses_one_thread_per_idle_core(monkeypatch, load, cores, expected):
    train_lista = _script("train_lista")
    monkeypatch.setattr(train_lista.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(train_lista.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert train_lista.choose_threads()[0] == expected
    assert train_lista.choose_threads(5) == (5, "--threads")


def test_train_lista_verdict_counts_the_layers_where_lista_is_below_every_baseline():
    train_lista = _script("train_lista")
    line = train_lista.verdict({"ISTA(0.4)": [-1.0, -2.0, -3.0], "FISTA(0.4)": [-1.0, -2.5, -4.0],
                                "LISTA": [-1.5, -2.2, -6.0]})
    assert line == ("LISTA is below ISTA and FISTA at 2 of 3 layers; at layer 3 it is 2.0 dB below "
                    "the best baseline, FISTA(0.4)")


def test_train_kmeansnet_says_why_identical_seeds_are_not_a_bug(monkeypatch, capsys):
    pytest.importorskip("sklearn")
    train_kmeansnet = _script("train_kmeansnet")
    row = {"ACC": 0.79, "NMI": 0.74, "ARI": 0.67}
    # one clustering with its labels in another order: NMI equal up to rounding, as in a real run
    monkeypatch.setattr(train_kmeansnet, "compare", lambda seeds, variant: (
        [dict(row, NMI=0.74 + 1e-16 * s) for s in seeds], [dict(row) for _ in seeds]))
    train_kmeansnet.main(["--seeds", "3"])
    out = capsys.readouterr().out
    assert "all 3 seeds give the same kmeansnet clustering (std 0), not a bug" in out
    assert "critical temperature" in out
    # seeds that disagree need no explanation
    monkeypatch.setattr(train_kmeansnet, "compare", lambda seeds, variant: (
        [dict(row, ACC=0.7 + 0.01 * s) for s in seeds], [dict(row) for _ in seeds]))
    train_kmeansnet.main(["--seeds", "3"])
    assert "not a bug" not in capsys.readouterr().out


NONNEG_LASSO = """network NonnegLasso
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 0.1
let L = opnorm(D)^2
var z : R[n] = 0
minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)
subject to z >= 0
derive proxgrad(step = 1/L)
unroll 3
output z
"""


def test_objective_leaves_out_the_constraints_indicator_and_says_so():
    import torch
    from dpc.pipeline import compile_program
    from dpc.reference import evaluate_objective
    Net = build(NONNEG_LASSO, "nonneg.dp")
    assert "without the indicator of z >= 0: a point outside gets this value, not inf" in Net.objective.__doc__
    rng = np.random.default_rng(0)
    D, x = rng.normal(size=(4, 6)), rng.normal(size=(3, 4))
    z = rng.normal(size=(3, 6))  # negative entries: outside z >= 0
    assert (z < 0).any(axis=1).all()
    expected = 0.5 * ((x - z @ D.T) ** 2).sum(1) + 0.1 * np.abs(z).sum(1)  # written here, independently
    got = Net(D=torch.tensor(D)).objective(torch.tensor(x), torch.tensor(z)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    reference = evaluate_objective(compile_program(NONNEG_LASSO, "nonneg.dp"), {"x": x}, {"z": z}, params={"D": D})
    np.testing.assert_allclose(reference, expected, rtol=1e-12)
    # an unconstrained program's docstring has no such clause
    plain = build(NONNEG_LASSO.replace("subject to z >= 0\n", ""), "plain.dp")
    assert "indicator" not in plain.objective.__doc__


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_compiled_examples_are_ignored_and_the_scripts_are_not():
    def ignored(path):
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0
    outputs = [f"examples/{p.stem}.py" for p in sorted(EXAMPLES.glob("*.dp"))]
    assert outputs
    assert [p for p in outputs if not ignored(p)] == [], "add these to .gitignore"
    scripts = [f"examples/{p.name}" for p in EXAMPLES.glob("*.py") if p.with_suffix(".dp").name not in
               {q.name for q in EXAMPLES.glob("*.dp")}]
    assert {"examples/train_lista.py", "examples/train_kmeansnet.py", "examples/sparse_coding.py"} <= set(scripts)
    assert [s for s in scripts if ignored(s)] == []


def test_documentation_links_stay_inside_the_repository():
    """Every relative link or path in README.md and docs/*.md resolves to a file of this repository."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    outside, missing = [], []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        targets = re.findall(r"\]\(([^)\s#]+)", text) + re.findall(r"`((?:\.\./)+[^`\s]+)`", text)
        for target in targets:
            if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
                continue
            resolved = (page.parent / target).resolve()
            if ROOT.resolve() not in resolved.parents:
                outside.append(f"{page.name}: {target}")
            elif not resolved.exists():
                missing.append(f"{page.name}: {target}")
    assert outside == [] and missing == []
