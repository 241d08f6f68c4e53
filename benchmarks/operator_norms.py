"""conv's operator norm against its symbol bound (docs/imaging.md, "Operator norms"): for a few filter banks and
every boundary, the dense SVD norm of conv(K, ., pad) on small images over sqrt(S), S = sup_w sum_k |K_k^(w)|^2
(numpy on a 2048 x 2048 grid), and the generated helper's convsymbol(K) / S. float64, numpy and the generated
_conv / _dct_filters / _conv_symbol helpers (dpc.backends.torch.runtime.namespace).

    OMP_NUM_THREADS=1 python benchmarks/operator_norms.py

then the untrained TNRD's (examples/tnrd.dp: 24 DCT filters of 5 x 5, reflect) opnorm^2 by 3000 power iterations of
convT(conv(.)) on 16 x 16, 32 x 32 and 64 x 64 images, beside dpc's bound 4 * convsymbol(K).
"""
from __future__ import annotations

import numpy as np
import torch

from dpc.backends.torch.runtime import namespace

PADS = {"zero": "constant", "reflect": "reflect", "circular": "circular"}
SIZES = [(6, 5), (12, 9), (20, 17)]


def dense(H, K, pad, h, w):
    n = h * w
    out = H["_conv"](torch.tensor(K), torch.eye(n, dtype=torch.float64).reshape(n, h, w), pad)
    return out.reshape(n, -1).T.numpy()


def main():
    torch.set_default_dtype(torch.float64)
    H = namespace("_conv", "_dct_filters", "_conv_symbol")
    rng = np.random.default_rng(0)
    banks = [("DCT 24 x 5 x 5", H["_dct_filters"](24, 5, 5).numpy()), ("DCT 8 x 3 x 3", H["_dct_filters"](8, 3, 3).numpy()),
             ("random 6 x 5 x 5", rng.standard_normal((6, 5, 5))), ("random 3 x 3 kernel", rng.standard_normal((3, 3))),
             ("random 4 x 4 x 4", rng.standard_normal((4, 4, 4))), ("shift 3 x 3 (K[0, 0] = 1)", np.eye(1, 9).reshape(3, 3))]
    print("| filters | S | convsymbol / S | " + " | ".join(f"{p} {h}x{w}" for p in PADS for h, w in SIZES) + " |")
    print("|---" * (3 + len(PADS) * len(SIZES)) + "|")
    for name, K in banks:
        filters = K.reshape(-1, K.shape[-2], K.shape[-1])
        S = (np.abs(np.fft.fft2(filters, s=(2048, 2048))) ** 2).sum(0).max()
        bound = float(H["_conv_symbol"](torch.tensor(K)))
        ratios = [np.linalg.norm(dense(H, K, mode, h, w), 2) / np.sqrt(S) for mode in PADS.values() for h, w in SIZES]
        print(f"| {name} | {S:.4g} | {bound / S:.4f} | " + " | ".join(f"{r:.4f}" for r in ratios) + " |")
    H.update(namespace("_conv_t"))
    K = H["_dct_filters"](24, 5, 5)
    print(f"\nTNRD's 24 DCT filters of 5 x 5, reflect: dpc's bound 4 * convsymbol(K) = {4 * float(H['_conv_symbol'](K)):.4g}")
    for n in (16, 32, 64):
        u = torch.randn(1, n, n, generator=torch.Generator().manual_seed(0))
        for _ in range(3000):
            v = H["_conv_t"](K, H["_conv"](K, u, "reflect"), "reflect")
            value = float((v * u).sum() / (u * u).sum())
            u = v / v.norm()
        print(f"  {n} x {n}: opnorm^2 = {value:.4f} (3000 power iterations)")


if __name__ == "__main__":
    main()
