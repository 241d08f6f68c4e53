"""examples/image_data.py (issue 20, item 5): the bundled natural images, their fixed train/test split, patches
and noise. Checked against numpy computations written here, not against the module's own helpers."""
import importlib.util

import numpy as np
import pytest

from conftest import EXAMPLES

pytest.importorskip("skimage")
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def D():
    spec = importlib.util.spec_from_file_location("image_data_under_test", EXAMPLES / "image_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_split_is_disjoint_and_complete(D):
    assert set(D.TRAIN_IMAGES).isdisjoint(D.TEST_IMAGES)
    assert len(D.TRAIN_IMAGES) == 9 and len(D.TEST_IMAGES) == 5
    # no image appears twice under two names (chelsea and cat are one picture in skimage.data)
    whole = [D.load_image(n) for n in D.TRAIN_IMAGES + D.TEST_IMAGES]
    for i in range(len(whole)):
        for j in range(i):
            assert whole[i].shape != whole[j].shape or not np.array_equal(whole[i], whole[j])


def test_images_are_8bit_grayscale_float64(D):
    for name in D.TRAIN_IMAGES + D.TEST_IMAGES:
        x = D.load_image(name)
        assert x.dtype == np.float64 and x.ndim == 2 and min(x.shape) >= 256
        assert x.min() >= 0.0 and x.max() <= 255.0 and x.max() > 100.0
        assert np.array_equal(x, np.round(x))


def test_colour_images_use_the_601_luma(D):
    from skimage import data
    rgb = data.astronaut().astype(np.float64)
    expected = np.round(rgb @ np.array([0.2125, 0.7154, 0.0721]))  # skimage's rgb2gray weights
    assert np.abs(D.load_image("astronaut") - expected).max() <= 1.0


def test_test_images_are_centre_crops(D):
    from skimage import data
    crops = D.test_images()
    assert list(crops) == list(D.TEST_IMAGES)
    for x in crops.values():
        assert x.shape == (256, 256) and x.dtype == np.float64
    camera = data.camera().astype(np.float64)  # 512 x 512: the crop is rows and columns 128..383
    np.testing.assert_array_equal(crops["camera"], camera[128:384, 128:384])
    coins = data.coins().astype(np.float64)  # 303 x 384: rows 23..278, columns 64..319
    np.testing.assert_array_equal(crops["coins"], coins[23:279, 64:320])
    assert D.test_images(64)["moon"].shape == (64, 64)


def test_noise_is_seeded_gaussian_and_unclipped(D):
    clean = D.test_images()
    a, b = D.noisy_test_images(25.0), D.noisy_test_images(25.0)
    c = D.noisy_test_images(25.0, seed=1)
    for i, name in enumerate(D.TEST_IMAGES):
        np.testing.assert_array_equal(a[name], b[name])
        noise = a[name] - clean[name]
        np.testing.assert_allclose(noise, 25.0 * np.random.default_rng(i).standard_normal((256, 256)), atol=1e-12)
        assert abs(noise.std() - 25.0) < 0.5 and abs(noise.mean()) < 0.5
        assert not np.array_equal(a[name], c[name])
        if i + 1 < len(D.TEST_IMAGES):  # image i at seed 1 gets the noise of image i + 1 at seed 0
            np.testing.assert_allclose(c[name] - clean[name], a[D.TEST_IMAGES[i + 1]] - clean[D.TEST_IMAGES[i + 1]])
    assert min(x.min() for x in a.values()) < 0.0 and max(x.max() for x in a.values()) > 255.0


def test_train_patches_are_deterministic_and_come_from_training_images(D):
    p = D.train_patches(40, 32, seed=3)
    assert p.shape == (40, 32, 32) and p.dtype == np.float64
    np.testing.assert_array_equal(p, D.train_patches(40, 32, seed=3))
    assert not np.array_equal(p, D.train_patches(40, 32, seed=4))
    assert p.min() >= 0.0 and p.max() <= 255.0
    train = [D.load_image(n) for n in D.TRAIN_IMAGES]
    test = [D.load_image(n) for n in D.TEST_IMAGES]

    def occurs(patch, image):  # candidates where the first row's first 4 pixels match, then the whole patch
        k = patch.shape[0]
        rows, cols = np.nonzero(np.all(np.lib.stride_tricks.sliding_window_view(image, 4, axis=1)
                                       == patch[0, :4], axis=2))
        return any(r + k <= image.shape[0] and c + k <= image.shape[1]
                   and np.array_equal(image[r:r + k, c:c + k], patch) for r, c in zip(rows, cols))

    for patch in p[:8]:
        assert any(occurs(patch, x) for x in train)
        assert not any(occurs(patch, x) for x in test)


def test_metrics_clip_and_match_the_definition(D):
    rng = np.random.default_rng(0)
    clean = np.round(rng.uniform(0, 255, (64, 64)))
    est = clean + rng.normal(0, 10, clean.shape)
    mse = np.mean((np.clip(est, 0, 255) - clean) ** 2)
    assert abs(D.psnr(clean, est) - 10 * np.log10(255.0 ** 2 / mse)) < 1e-10
    assert D.ssim(clean, clean) == pytest.approx(1.0)
    assert D.ssim(clean, est) < D.ssim(clean, clean + rng.normal(0, 2, clean.shape)) < 1.0


def test_baselines_script_quick_run(capsys):
    """benchmarks/denoise_baselines.py --quick (64 x 64 crops, 7 TV weights, no BM3D): the table is printed and
    the tuned TV denoises (every image's PSNR above the noisy one's)."""
    from conftest import load_benchmark
    baselines = load_benchmark("denoise_baselines")
    (result,) = baselines.main(["--quick", "--sigmas", "25"])
    out = capsys.readouterr().out
    assert "| **average** |" in out and "TV (tuned)" in out
    assert not result["tv_weight_at_grid_edge"]
    for row in result["images"].values():
        assert row["tv"][0] > row["noisy"][0] + 2.0
        assert row["tv_oracle"][0] >= row["tv"][0] - 1e-12
