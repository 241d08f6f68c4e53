"""Issue 20: the reference evaluator (dpc.reference, the fuzzer's oracle) builds `param K = dct` filters itself,
numpy from the DCT-II definition, equal to the generated module's _dct_filters; `param K = random` it takes from
the module (it cannot draw torch's numbers) and says so when missing. The test's own DCT is scipy's."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch

from conftest import build
from dpc import reference
from dpc.backends.torch.runtime import namespace
from dpc.pipeline import compile_program

torch.set_default_dtype(torch.float64)

PROGRAM = """network Filtered
dims   k, s, h, w
input  f : R[h, w]
param  K : R[k, s, s] = INIT
hyper  lam = 0.1
var    u : R[h, w] = f
minimize 0.5 * sqnorm(u - f) + lam * norm1(conv(K, u, pad = zero))
derive pdhg
unroll 4
output u
"""


def _scipy_dct_bank(k, s0, s1):
    """The orthonormal 2-D DCT-II basis by scipy (the inverse DCT of each unit coefficient), without the
    constant element, lowest i + j first, then lowest i."""
    order = sorted(((i, j) for i in range(s0) for j in range(s1) if (i, j) != (0, 0)), key=lambda t: (t[0] + t[1], t[0]))
    out = []
    for i, j in order[:k]:
        e = np.zeros((s0, s1))
        e[i, j] = 1.0
        out.append(scipy.fft.idctn(e, type=2, norm="ortho"))
    return np.stack(out)


@pytest.mark.parametrize("k,s0,s1", [(8, 3, 3), (24, 5, 5), (3, 2, 4), (48, 7, 7)])
def test_reference_dct_equals_the_generated_filters_and_scipy(k, s0, s1):
    ours = reference._dct_filters(np, k, s0, s1)
    generated = namespace("_dct_filters")["_dct_filters"](k, s0, s1).numpy()
    np.testing.assert_allclose(ours, _scipy_dct_bank(k, s0, s1), rtol=0, atol=1e-15)
    np.testing.assert_allclose(ours, generated, rtol=0, atol=1e-15)


def test_reference_builds_dct_params_and_matches_the_module():
    text = PROGRAM.replace("INIT", "dct")
    net = build(text)(k=6, s=3)
    program = compile_program(text, "filtered.dp")
    f = np.random.default_rng(0).standard_normal((2, 7, 6))
    want = reference.evaluate(program, {"f": f}, dims={"k": 6, "s": 3}, trace=True)
    got = net(torch.tensor(f), trace=True)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.detach().numpy(), b, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"param K = dct is built from its sizes: give k, s in dims= or K"):
        reference.evaluate(program, {"f": f})


def test_reference_takes_random_filters_from_the_module():
    text = PROGRAM.replace("INIT", "random")
    torch.manual_seed(0)
    net = build(text)(k=4, s=3)
    program = compile_program(text, "filtered.dp")
    f = np.random.default_rng(1).standard_normal((2, 6, 5))
    with pytest.raises(ValueError, match=r"param K starts at random filters \(= random\): give the module's value "
                                         r"\(net.K\) in params="):
        reference.evaluate(program, {"f": f}, dims={"k": 4, "s": 3})
    want = reference.evaluate(program, {"f": f}, params={"K": net.K.detach().numpy()})
    np.testing.assert_allclose(net(torch.tensor(f)).detach().numpy(), want, rtol=0, atol=1e-12)
