"""Issue 20, item 3: solves with operators. derive admm / hqs / pdhg on objectives with conv and grad2d solve
their u-step system matrix-free: by the FFT when every operator is a circular convolution (circsolve,
helper _circulant_solve), else by conjugate gradients on the operators (OperatorCG, helper _cg_op).

The references are numpy's: the systems built as dense matrices (each conv's matrix from its definition, the
correlation with u padded by np.pad in the boundary's mode) and solved by np.linalg.solve; float64."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import dpc
from conftest import (EXAMPLES, admm_numpy, conv_matrix, deconv_text, derivative_filters, grad2d_matrix, hqs_numpy,
                      soft)
from dpc import atoms, declare, reference
from dpc.errors import DpcError
from dpc.pipeline import compile_program

ROOT = EXAMPLES.parent


def helper_fn(name):
    """A runtime helper as a generated module defines it."""
    import torch.nn.functional as F
    space = {"torch": torch, "F": F, "nn": torch.nn}
    exec(declare.HELPERS[name].source, space)
    return space[name]


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    k = rng.random((3, 3))
    k /= k.sum()
    D = rng.standard_normal((2, 3, 3))
    return k, D, rng


@pytest.mark.parametrize("h, w", [(6, 7), (8, 5)])
@pytest.mark.parametrize("c0", [0.3, 0.0])
def test_fft_solve_equals_the_dense_solve(data, h, w, c0):
    k, D, rng = data
    b = rng.standard_normal((3, h, w))
    weights = (1.0, 0.7)
    A = c0 * np.eye(h * w) + weights[0] * conv_matrix(k, h, w, "circular").T @ conv_matrix(k, h, w, "circular")
    for d in D:
        A += weights[1] * conv_matrix(d, h, w, "circular").T @ conv_matrix(d, h, w, "circular")
    assert np.linalg.cond(A) < 1e6  # definite (k sums to 1), so the FFT's answer is the one solution
    want = np.stack([np.linalg.solve(A, bi.ravel()).reshape(h, w) for bi in b])
    got = helper_fn("_circulant_solve")(torch.tensor(b), c0, (torch.tensor(k), torch.tensor(D)), weights)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-10)
    ref = declare.BY_CLASS[atoms.CirculantSolve].reference(np, b[0], c0, k, weights[0], D.reshape(-1, 3), weights[1])
    np.testing.assert_allclose(ref, want[0], rtol=0, atol=1e-10)


def test_fft_solve_of_a_singular_system_is_the_least_norm_solution(data):
    """Difference filters alone vanish at frequency 0: the FFT solve gives the solution with mean 0."""
    _, _, rng = data
    h, w = 6, 7
    D = np.zeros((2, 3, 3))
    D[0, 1, 1], D[0, 1, 2], D[1, 1, 1], D[1, 2, 1] = -1, 1, -1, 1
    A = sum(conv_matrix(d, h, w, "circular").T @ conv_matrix(d, h, w, "circular") for d in D)
    b = A @ rng.standard_normal(h * w)  # in the range
    want = np.linalg.lstsq(A, b, rcond=None)[0]
    got = helper_fn("_circulant_solve")(torch.tensor(b.reshape(1, h, w)), 0, (torch.tensor(D),), (1,))
    np.testing.assert_allclose(got.numpy().ravel(), want, rtol=0, atol=1e-10)


ADMM = """network Deconv
dims   m, t, s, h, w
input  f : R[h, w]
param  k : R[s, s]
param  D : R[m, t, t]
hyper  lam = 0.1
var    u : R[h, w] = f
minimize 0.5*sqnorm(conv(k, u, pad = circular) - f) + lam*norm1(conv(D, u, pad = PAD))
derive admm(rho = 0.7SOLVE)
unroll 5
output u
"""


def build(tmp_path, text, name="prog.dp"):
    path = tmp_path / name
    path.write_text(text)
    return dpc.load(path)


@pytest.mark.parametrize("pad, solve, atol", [("circular", "", 1e-10), ("reflect", ", solve = cg(iters = 120)", 1e-8),
                                              ("zero", ", solve = cg(iters = 120)", 1e-8)])
def test_admm_with_operators_equals_numpy_admm_layer_by_layer(tmp_path, data, pad, solve, atol):
    k, D, rng = data
    text = ADMM.replace("PAD", pad).replace("SOLVE", solve)
    net = build(tmp_path, text)(k=torch.tensor(k), D=torch.tensor(D))
    generated = dpc.compile_source(text)
    assert ("_circulant_solve(" in generated) == (pad == "circular")
    assert ("_cg_op(" in generated) == (pad != "circular")
    for h, w in [(6, 7), (9, 8)]:
        f = rng.standard_normal((2, h, w))
        got = net(torch.tensor(f), trace=True)
        Km = conv_matrix(k, h, w, "circular")
        Dm = np.vstack([conv_matrix(d, h, w, pad) for d in D])
        for n in range(2):
            want = admm_numpy(f[n], Km, Dm, 0.1, 0.7, 5)
            for g, wnt in zip(got, want):
                np.testing.assert_allclose(g[n].numpy(), wnt, rtol=0, atol=atol)
        ref = reference.evaluate(compile_program(text, "prog.dp"), {"f": f}, {"k": k, "D": D}, trace=True)
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g.numpy(), np.asarray(r), rtol=0, atol=1e-10)


def test_few_cg_steps_are_not_the_solve_and_the_default_is_stated(tmp_path, data):
    k, D, rng = data
    text = ADMM.replace("PAD", "reflect").replace("SOLVE", "")
    generated = dpc.compile_source(text)
    assert "_cg_op(lambda p: " in generated and ", u, 20, 2)" in generated  # warm start, 20 steps, 2 axes
    assert "20 conjugate-gradient steps" in generated  # the docstring says how the u-step is solved
    few = build(tmp_path, ADMM.replace("PAD", "reflect").replace("SOLVE", ", solve = cg(iters = 2)"))
    f = rng.standard_normal((1, 6, 7))
    got = few(k=torch.tensor(k), D=torch.tensor(D))(torch.tensor(f))[0].numpy()
    want = admm_numpy(f[0], conv_matrix(k, 6, 7, "circular"), np.vstack([conv_matrix(d, 6, 7, "reflect") for d in D]),
                      0.1, 0.7, 5)[-1]
    assert np.abs(got - want).max() > 1e-6


def test_grad2d_system_uses_cg_and_converges_to_the_dense_admm(tmp_path, data):
    k, _, rng = data
    text = ADMM.replace("param  D : R[m, t, t]\n", "").replace("conv(D, u, pad = PAD)", "grad2d(u)").replace(
        "SOLVE", ", solve = cg(iters = 150)").replace("dims   m, t, s, h, w", "dims   s, h, w")
    net = build(tmp_path, text)(k=torch.tensor(k))
    f = rng.standard_normal((1, 6, 7))
    got = net(torch.tensor(f), trace=True)
    want = admm_numpy(f[0], conv_matrix(k, 6, 7, "circular"), grad2d_matrix(6, 7), 0.1, 0.7, 5)
    for g, wnt in zip(got, want):
        np.testing.assert_allclose(g[0].numpy(), wnt, rtol=0, atol=1e-8)


def test_untrained_deconv_shrinkage_equals_numpy_hqs_on_two_sizes(tmp_path):
    text = deconv_text()
    beta0, growth = (float(x) for x in re.search(r"derive hqs\(beta = ([\d.]+), growth = ([\d.]+)\)", text).groups())
    layers = int(re.search(r"(?m)^unroll (\d+)", text).group(1))
    lam = float(re.search(r"(?m)^hyper  lam = ([\d.]+)", text).group(1))
    rng = np.random.default_rng(3)
    k = rng.random((5, 5))
    k /= k.sum()
    D = derivative_filters()
    net = build(tmp_path, text, "deconv.dp")(k=torch.tensor(k), D=torch.tensor(D))
    assert "_circulant_solve(" in dpc.compile_source(text) and "_cg_op" not in dpc.compile_source(text)
    for h, w in [(8, 9), (12, 7)]:
        f = 255 * rng.random((2, h, w))
        got = net(torch.tensor(f), trace=True)
        assert len(got) == layers
        Km, Dm = conv_matrix(k, h, w, "circular"), np.vstack([conv_matrix(d, h, w, "circular") for d in D])
        for n in range(2):
            for g, want in zip(got, hqs_numpy(f[n], Km, Dm, lam, beta0, growth, layers)):
                np.testing.assert_allclose(g[n].numpy(), want, rtol=0, atol=1e-9 * 255)
        assert np.abs(got[-1].numpy() - f).max() > 1  # the layers move it


def error_of(text):
    with pytest.raises(DpcError) as err:
        compile_program(text, "prog.dp")
    return err.value.format()


def test_solve_fft_on_a_system_that_is_not_circulant_is_located_with_a_literal_hint():
    text = ADMM.replace("PAD", "reflect").replace("SOLVE", ", solve = fft")
    message = error_of(text)
    assert message.startswith("prog.dp:9:")
    assert "solve = fft needs a circulant u-step system" in message
    assert "conv(D, u, pad = reflect) is not a circular convolution" in message
    assert "write pad = circular in conv(D, u) for the FFT solve, or solve = cg(iters = 20)" in message
    fixed = text.replace("conv(D, u, pad = reflect)", "conv(D, u, pad = circular)")
    compile_program(fixed, "prog.dp")  # the hint applied compiles
    compile_program(text.replace("solve = fft", "solve = cg(iters = 20)"), "prog.dp")  # and so does the other


def test_solve_option_is_checked_and_hqs_refuses_a_dense_layer_matrix():
    message = error_of(ADMM.replace("PAD", "circular").replace("SOLVE", ", solve = lu"))
    assert message.startswith("prog.dp:9:") and "solve must be cg(iters = k) or fft" in message
    dense = """network L
dims   m, n
input  x : R[m]
param  A : R[m, n]
param  G : R[m, n]
hyper  lam = 0.1
var    z : R[n] = 0
minimize 0.5*sqnorm(A @ z - x) + 0.5*sqnorm(z) + lam*norm1(G @ z)
derive hqs(beta = 1, growth = 2)
unroll 3
output z
"""
    message = error_of(dense)
    assert message.startswith("prog.dp:9:") and "changes with the layer" in message
    assert "write `derive admm(rho = 1)` in place of `derive hqs(beta = 1, growth = 2)`" in message
    compile_program(dense.replace("derive hqs(beta = 1, growth = 2)", "derive admm(rho = 1)"), "prog.dp")


def test_pdhg_with_a_blur_in_f_solves_its_prox_by_fft(tmp_path, data):
    """derive pdhg on 0.5*sqnorm(conv(k, u) - f) + lam*norm1(grad2d(u)): the prox of tau*f is (I + tau K.T K)^-1."""
    k, _, rng = data
    text = ADMM.replace("param  D : R[m, t, t]\n", "").replace("conv(D, u, pad = PAD)", "grad2d(u)").replace(
        "derive admm(rho = 0.7SOLVE)", "derive pdhg").replace("dims   m, t, s, h, w", "dims   s, h, w")
    assert "_circulant_solve(" in dpc.compile_source(text)
    net = build(tmp_path, text)(k=torch.tensor(k))
    h, w = 6, 7
    f = rng.standard_normal((1, h, w))
    got = net(torch.tensor(f), trace=True)
    Km, G = conv_matrix(k, h, w, "circular"), grad2d_matrix(h, w)
    tau = sigma = 0.99 / np.sqrt(8)
    u, ubar, y = f[0].ravel(), f[0].ravel(), np.zeros(G.shape[0])
    for g in got:
        y = np.clip(y + sigma * G @ ubar, -0.1, 0.1)
        u_next = np.linalg.solve(np.eye(h * w) + tau * Km.T @ Km, u - tau * G.T @ y + tau * Km.T @ f[0].ravel())
        ubar, u = 2 * u_next - u, u_next
        np.testing.assert_allclose(g[0].numpy().ravel(), u, rtol=0, atol=1e-10)


SIZES = [(2, 9, 11), (3, 16, 12)]


def test_deconv_compile_dynamic_and_export(tmp_path):
    torch.manual_seed(0)
    k = torch.rand(5, 5, dtype=torch.float64)
    net = build(tmp_path, deconv_text(learn=True), "deconv.dp")(k=k / k.sum(), D=torch.tensor(derivative_filters()),
                                                                steps=3)
    assert len([p for p in net.parameters() if p.requires_grad]) == 3  # learn shrink untied: psi per stage
    net = net.double()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager", dynamic=True)
    for size in SIZES:
        x = 255 * torch.rand(*size, dtype=torch.float64)
        with torch.no_grad():
            want, got = net(x), compiled(x)
        assert (want - x).abs().max() > 1e-3
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
        params = [p for p in net.parameters() if p.requires_grad]
        if params:  # learned shrinkage: training through the compiled module gives eager's gradients
            want_g = torch.autograd.grad(net(x).square().mean(), params)
            got_g = torch.autograd.grad(compiled(x).square().mean(), params)
            for g, wg in zip(got_g, want_g):
                torch.testing.assert_close(g, wg, rtol=1e-9, atol=1e-12)
    dims = {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("h", min=6, max=4096),
            2: torch.export.Dim("w", min=6, max=4096)}
    exported = torch.export.export(net, (255 * torch.rand(2, 10, 13, dtype=torch.float64),), dynamic_shapes={"f": dims})
    for size in SIZES + [(1, 7, 20)]:
        x = 255 * torch.rand(*size, dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(exported.module()(x), net(x), rtol=0, atol=1e-9)


def test_train_deconv_quick_runs():
    out = subprocess.run([sys.executable, str(EXAMPLES / "train_deconv.py"), "--quick"], capture_output=True, text=True,
                         timeout=600, env={"OMP_NUM_THREADS": "1", **__import__("os").environ})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| **average** |" in out.stdout and "learned shrinkage - untrained HQS" in out.stdout


def test_fft_vs_cg_benchmark_quick_runs():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import fft_vs_cg
    rows = fft_vs_cg.main(["--quick"])
    assert len(rows) == 2 and all(isinstance(r[2], int) for r in rows)  # CG reached the FFT solution's accuracy
