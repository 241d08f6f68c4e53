"""Grayscale natural images for denoising, without downloads (issue 20, item 5).

Every image comes from files that scikit-image and scikit-learn install with themselves:
`skimage.data` and `sklearn.datasets.load_sample_image`. Nothing is fetched from the network.

Images: converted to grayscale with `skimage.color.rgb2gray` (ITU-R 601-2 luma weights) where they are in
colour, scaled to [0, 255] and rounded to integers (so each clean image is an 8-bit image, as in BSD68), and
returned as float64 arrays.

The split is fixed (by name, below) and the two sets share no image:

    TRAIN_IMAGES  astronaut, coffee, chelsea, brick, grass, rocket, clock, motorcycle (the left view of
                  skimage.data.stereo_motorcycle), flower (sklearn)                        9 images
    TEST_IMAGES   camera, coins, moon, gravel, china (sklearn)                              5 images

- training data: `train_patches(n, size, seed)` draws n square patches, each from a training image chosen
  uniformly at random and at a uniformly random position, with numpy's default_rng(seed) (seed 0 unless
  given); the whole image is used, borders included.
- test data: `test_images(size)` is the centre crop of size x size pixels (TEST_SIZE = 256 by default;
  every test image is at least 303 x 384) of each test image, in the order of TEST_IMAGES.
- noise: `add_noise(x, sigma, seed)` adds white Gaussian noise of standard deviation sigma (on the [0, 255]
  scale), drawn with default_rng(seed); the noisy image is not clipped (as in TNRD's and BM3D's papers).
  `noisy_test_images(sigma, size, seed)` uses seed + i for the i-th test image, so every method sees the
  same noisy images.

    from image_data import test_images, noisy_test_images, train_patches
    clean = test_images()                  # dict name -> (256, 256) float64 in [0, 255]
    noisy = noisy_test_images(25)          # same keys, + N(0, 25^2), seeds 0..4
    patches = train_patches(1000, 64)      # (1000, 64, 64) float64 in [0, 255], seed 0

Needs numpy, scikit-image and scikit-learn (`pip install -e .[examples]`); not torch.
"""
from __future__ import annotations

import functools

import numpy as np

TRAIN_IMAGES = ("astronaut", "coffee", "chelsea", "brick", "grass", "rocket", "clock", "motorcycle", "flower")
TEST_IMAGES = ("camera", "coins", "moon", "gravel", "china")
TEST_SIZE = 256

_SKLEARN = {"china": "china.jpg", "flower": "flower.jpg"}


@functools.lru_cache(maxsize=None)
def _load(name: str) -> np.ndarray:
    if name in _SKLEARN:
        from sklearn.datasets import load_sample_image
        raw = load_sample_image(_SKLEARN[name])
    elif name == "motorcycle":
        from skimage import data
        raw = data.stereo_motorcycle()[0]  # (left, right, disparity): the left view
    else:
        from skimage import data
        raw = getattr(data, name)()
    raw = np.asarray(raw)
    if raw.dtype != np.uint8:
        raise ValueError(f"image {name!r}: expected uint8 pixels, got {raw.dtype}")
    if raw.ndim == 3:
        from skimage.color import rgb2gray
        gray = np.round(rgb2gray(raw[..., :3]) * 255.0)  # rgb2gray of uint8 is float in [0, 1]
    else:
        gray = raw.astype(np.float64)
    gray = np.clip(gray, 0.0, 255.0).astype(np.float64)
    gray.setflags(write=False)
    return gray


def load_image(name: str) -> np.ndarray:
    """The whole grayscale image `name` (one of TRAIN_IMAGES or TEST_IMAGES): float64 in [0, 255], a copy."""
    if name not in TRAIN_IMAGES and name not in TEST_IMAGES:
        raise KeyError(f"unknown image {name!r}; the images are {TRAIN_IMAGES + TEST_IMAGES}")
    return _load(name).copy()


def train_images() -> dict[str, np.ndarray]:
    """The whole training images, name -> (h, w) float64 in [0, 255]."""
    return {name: load_image(name) for name in TRAIN_IMAGES}


def centre_crop(x: np.ndarray, size: int) -> np.ndarray:
    h, w = x.shape
    if size > min(h, w):
        raise ValueError(f"crop size {size} exceeds the image ({h} x {w})")
    top, left = (h - size) // 2, (w - size) // 2
    return x[top:top + size, left:left + size].copy()


def test_images(size: int = TEST_SIZE) -> dict[str, np.ndarray]:
    """The centre size x size crop of every test image, name -> float64 in [0, 255], in TEST_IMAGES order."""
    return {name: centre_crop(_load(name), size) for name in TEST_IMAGES}


def add_noise(x: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """x + sigma * N(0, 1) (white, i.i.d.), drawn with numpy's default_rng(seed); not clipped."""
    rng = np.random.default_rng(seed)
    return x + sigma * rng.standard_normal(x.shape)


def noisy_test_images(sigma: float, size: int = TEST_SIZE, seed: int = 0) -> dict[str, np.ndarray]:
    """The test crops with noise of standard deviation sigma; the i-th image (TEST_IMAGES order) uses seed + i."""
    return {name: add_noise(x, sigma, seed + i) for i, (name, x) in enumerate(test_images(size).items())}


def train_patches(n: int, size: int, seed: int = 0) -> np.ndarray:
    """n random size x size patches of the training images, (n, size, size) float64 in [0, 255].

    Image i is drawn uniformly from TRAIN_IMAGES, then the top-left corner uniformly among the positions
    where the patch fits, all with numpy's default_rng(seed)."""
    images = [_load(name) for name in TRAIN_IMAGES]
    if size > min(min(x.shape) for x in images):
        raise ValueError(f"patch size {size} exceeds the smallest training image")
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size))
    which = rng.integers(0, len(images), size=n)
    for j, i in enumerate(which):
        x = images[i]
        top = rng.integers(0, x.shape[0] - size + 1)
        left = rng.integers(0, x.shape[1] - size + 1)
        out[j] = x[top:top + size, left:left + size]
    return out


def psnr(clean: np.ndarray, estimate: np.ndarray) -> float:
    """PSNR in dB on the [0, 255] scale of the estimate clipped to [0, 255] (skimage.metrics)."""
    from skimage.metrics import peak_signal_noise_ratio
    return float(peak_signal_noise_ratio(clean, np.clip(estimate, 0.0, 255.0), data_range=255.0))


def ssim(clean: np.ndarray, estimate: np.ndarray) -> float:
    """SSIM of the estimate clipped to [0, 255] (skimage.metrics.structural_similarity, its default 7 x 7
    uniform window, data_range 255)."""
    from skimage.metrics import structural_similarity
    return float(structural_similarity(clean, np.clip(estimate, 0.0, 255.0), data_range=255.0))


if __name__ == "__main__":
    for name in TRAIN_IMAGES + TEST_IMAGES:
        x = _load(name)
        part = "train" if name in TRAIN_IMAGES else "test"
        print(f"{part:5s} {name:11s} {x.shape[0]:4d} x {x.shape[1]:4d}  mean {x.mean():6.1f}  std {x.std():5.1f}")
