"""examples/train_denoise.py (the compiled TNRD trained for denoising) and benchmarks/tnrd_speed.py at toy sizes:
the script runs end to end, training helps on its own small evaluation, its metrics agree with a numpy PSNR,
the figure takes learned influence curves, and the speed benchmark compares equal networks."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import EXAMPLES, ROOT, load_benchmark

pytest.importorskip("skimage")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


def load_script():
    spec = importlib.util.spec_from_file_location("train_denoise", EXAMPLES / "train_denoise.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def numpy_psnr(clean, estimate):
    mse = np.mean((clean - np.clip(estimate, 0, 255)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def test_quick_run_end_to_end_trained_beats_untrained(tmp_path):
    pytest.importorskip("tqdm")
    out, fig = tmp_path / "out", tmp_path / "fig.png"
    done = subprocess.run([sys.executable, str(EXAMPLES / "train_denoise.py"), "--quick", "--no-bm3d",
                           "--out", str(out), "--figure", str(fig)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| **average** |" in done.stdout and "TNRD (trained) - TV (tuned)" in done.stdout
    assert "Machine:" in done.stdout and "wall time:" in done.stdout
    assert fig.stat().st_size > 10_000
    result = json.loads((out / "denoise_sigma25_quick.json").read_text())
    scores = result["scores"]
    assert list(scores) == ["noisy", "untrained", "TNRD (trained)", "TV (tuned)"]
    names = list(scores["noisy"])
    assert names == ["camera", "coins", "moon", "gravel", "china"]
    # the noisy images are image_data's, scored like a numpy PSNR on the clipped estimate
    sys.path.insert(0, str(EXAMPLES))
    import image_data as D
    clean, noisy = D.test_images(64), D.noisy_test_images(25, 64)
    for name in names:
        assert scores["noisy"][name][0] == pytest.approx(numpy_psnr(clean[name], noisy[name]), abs=1e-9)
    # training helps on every test crop: 100 steps of 2 stages (measured +0.6 to +1.3 dB per crop)
    gains = [scores["TNRD (trained)"][n][0] - scores["untrained"][n][0] for n in names]
    assert min(gains) > 0.2, gains
    assert np.mean(gains) > 0.5, gains
    assert scores["untrained"]["camera"][0] > scores["noisy"]["camera"][0]  # the untrained TNRD denoises a bit
    assert result["steps_done"] == 100 and isinstance(result["learned_influence"], bool)  # either tnrd.dp


def test_figure_draws_learned_influence_curves_when_the_module_has_them(tmp_path):
    script = load_script()

    class Fake(torch.nn.Module):  # what a `learn influence` module exposes: influence_curves() -> (z, values)
        def __init__(self):
            super().__init__()
            self.K = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(3, 5, 5)) for _ in range(2))

        def influence_curves(self, z=None):
            z = torch.linspace(-310, 310, 101)
            return z, torch.stack([torch.stack([k * z / (1 + (z / 50) ** 2) for k in (1, 2, 3)])] * 2)

    rng = np.random.default_rng(0)
    images = {n: 255 * rng.random((32, 32)) for n in ("camera", "gravel")}
    sc = {key: {n: (20.0, 0.5) for n in images} for key in ("noisy", "tv", "trained")}
    for net, name in ((Fake(), "curves.png"), (torch.nn.Module(), "none.png")):
        path = tmp_path / name
        script.figure(path, net, images, images, images, images, sc, 25, 32)
        assert path.stat().st_size > 5_000


@pytest.mark.parametrize("analytic", [True, False], ids=["analytic", "as-written"])
def test_speed_benchmark_compares_equal_networks_and_runs(analytic):
    speed = load_benchmark("tnrd_speed")
    args = type("A", (), dict(program=str(EXAMPLES / "tnrd.dp"), filters=4, size=5, stages=2, analytic=analytic))()
    gen, learned, hand = speed.build(args)
    if analytic:
        assert not learned
    with torch.no_grad():
        K0 = list(gen.K)[0].detach()
        for net in hand.values():
            net.R.copy_(K0[None, :, None].expand_as(net.R))
    x = 255 * torch.rand(2, 13, 11, dtype=torch.float64)
    name = next(iter(hand))
    # float64: the like-for-like hand-written network computes the same function (analytic influence: to
    # rounding; learned RBFs: to the two least-squares fits' difference)
    assert speed.agreement(gen, hand[name], x) < (1e-3 if learned else 1e-12)
    threads = torch.get_num_threads()
    try:
        result = speed.main(["--quick"] + (["--analytic"] if analytic else []))
    finally:
        torch.set_num_threads(threads)
    assert set(result) == {"forward+backward", "forward (no_grad)"}
    assert all(r["ratio"] > 0 for r in result.values())
