"""benchmarks/sc2net_unsupervised.py (issue 25 item 3), SC2Net's own setting at smoke size: the networks are
compiled from the example programs (tied LISTA and LFISTA by turning `untied` into `tied`), untrained they
are ISTA and FISTA at their depth, their objective() is the LASSO the script reports, and training on that
objective lowers it on held-out images at every depth."""
import json

import numpy as np
import pytest
import torch

from conftest import load_benchmark


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("sc2net")
    bench = load_benchmark("sc2net_unsupervised")
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    try:
        bench.main(["--smoke", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
    return bench, out, json.loads((out / "results.json").read_text())


def test_every_network_is_reported_at_every_depth_next_to_ista_and_fista(smoke):
    _, out, result = smoke
    names = ["ISTA", "FISTA", "LISTA (tied)", "LFISTA (tied)", "SC2Net (ISTA gates)", "SC2Net (Xavier gates)"]
    assert list(result["gap"]) == names and list(result["recon"]) == names
    assert all(set(result["gap"][n]) >= {"1", "2"} for n in names)
    assert all(v >= -1e-9 for rows in result["gap"].values() for v in rows.values())  # F(z*) is the optimum
    text = (out / "results.md").read_text()
    assert "| layers | " + " | ".join(names) + " |" in text
    assert (out / "sc2net.png").stat().st_size > 0


def test_untrained_networks_are_ista_and_fista_and_training_lowers_the_objective(smoke):
    _, _, result = smoke
    for d in ("1", "2"):
        ista = result["gap"]["ISTA"][d]
        for name in ("LISTA (tied)", "SC2Net (ISTA gates)"):
            assert result["info"][name][d]["untrained_gap"] == pytest.approx(ista, rel=1e-9)
        assert result["info"]["LFISTA (tied)"][d]["untrained_gap"] == pytest.approx(result["gap"]["FISTA"][d], rel=1e-9)
        for name in ("LISTA (tied)", "LFISTA (tied)", "SC2Net (ISTA gates)", "SC2Net (Xavier gates)"):
            assert result["gap"][name][d] < result["info"][name][d]["untrained_gap"]


def test_tied_programs_share_one_set_of_weights(smoke):
    bench, _, _ = smoke
    rng = np.random.default_rng(0)
    D = torch.as_tensor(rng.standard_normal((8, 12)))
    for name, file, replacements in bench.NETWORKS[:2]:
        cls = bench.network_class(file, replacements)
        shallow, deep = cls(D=D, lam=0.1, steps=2), cls(D=D, lam=0.1, steps=9)
        assert {n: p.shape for n, p in shallow.named_parameters()} == {n: p.shape for n, p in deep.named_parameters()}
        x = torch.as_tensor(rng.standard_normal((3, 8)))
        z = deep(x)
        torch.testing.assert_close(deep.objective(x, z), bench.objective(D, x, z, 0.1))
