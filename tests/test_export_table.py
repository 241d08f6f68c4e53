"""The export table of docs/export.md, one test a cell: which constructs work under torch.compile
(fullgraph=True, inference; training with eager's gradients), torch.export with a dynamic batch, and ONNX in
onnxruntime. LISTA, the k-means network and SC2Net (unroll N, closed form, a gated cell) are
tests/test_ecosystem.py's (DDP too), SC2Net's fullgraph inference and the k-means network's compile cells are
here; here also: `unroll until` with backward unrolled and implicit, FISTA under
`until` (a scalar state), and ADMM (a solve), each module compiled once and reused across the cells."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import dpc
from conftest import EXAMPLES
from test_ecosystem import perturbed

LASSO = """network {name}
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 1
let L = opnorm(D)^2
var z : R[n] = 0
minimize 0.5*sqnorm(x - D @ z) + lam*norm1(z)
derive {method}(step = 1/L)
unroll until(tol = 1e-5, max = 2000)
backward {backward}
learn lam
output z
"""
ADMM = (EXAMPLES / "admm_net.dp").read_text()
M, N = 12, 24
# lam = 1, tol = 1e-5, max = 2000: every sample of every batch here stops before max, each at its own iteration,
# and backward implicit's adjoint converges: the cells are the fixed point's (a warning that one did not is an
# error)
pytestmark = [pytest.mark.filterwarnings("error:.*unroll until:RuntimeWarning"),
              pytest.mark.filterwarnings("error:.*backward implicit:RuntimeWarning")]


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """name -> (class, constructor arguments); dpc.load registers each module, as torch.export needs."""
    root = tmp_path_factory.mktemp("export")
    texts = {
        "until": LASSO.format(name="Until", method="proxgrad", backward="unrolled"),
        "implicit": LASSO.format(name="Implicit", method="proxgrad", backward="implicit"),
        "fista_until": LASSO.format(name="FistaUntil", method="fista", backward="unrolled"),
        "admm": ADMM,
        # the ONNX fallback for a solve: k conjugate-gradient steps, matrix products only (k = n: the exact
        # solve in exact arithmetic)
        "admm_cg": ADMM.replace("derive admm(rho = rho)", "derive admm(rho = rho, solve = cg(iters = 8))"),
        "kmeans": (EXAMPLES / "kmeansnet.dp").read_text(),
        # a gated recurrent cell (tied W, S, theta and the gates), 4 steps
        "sc2net": (EXAMPLES / "sc2net.dp").read_text(),
    }
    rng = np.random.default_rng(0)
    D = rng.standard_normal((M, N)) / np.sqrt(M)
    Dd = np.diff(np.eye(8), axis=0)
    out = {}
    for name, text in texts.items():
        path = root / f"{name}.dp"
        path.write_text(text)
        args = {"Dd": Dd, "steps": 4} if name.startswith("admm") else {"D": D}
        if name == "kmeans":  # the closed form: one layer, a learned C
            args = {"C": rng.standard_normal((N // 3, M)) * 0.3, "tau": 0.5}
        if name == "sc2net":
            args = {"D": D, "steps": 4}
        out[name] = (dpc.load(str(path)), args)
    return out


def make(nets, name, dtype=torch.float64):
    cls, args = nets[name]
    net = cls(**{k: torch.tensor(v, dtype=dtype) if isinstance(v, np.ndarray) else v for k, v in args.items()})
    # SC2Net's untrained gates are inert (its layers are ISTA's): every parameter moved, so that each one matters
    return perturbed(net, 100) if name == "sc2net" else net


def inputs(name, batch, dtype=torch.float64, seed=1):
    size = 8 if name.startswith("admm") else M
    return torch.tensor(np.random.default_rng(seed).standard_normal((batch, size)), dtype=dtype)


FIXED_POINTS = ("until", "implicit", "fista_until")


@pytest.mark.parametrize("name", FIXED_POINTS + ("admm", "kmeans", "sc2net"))
def test_compile_fullgraph_inference(nets, name):
    """One while_loop for `unroll until`: no data-dependent guard, and one graph for every batch size
    (FISTA's scalar state hit the recompile limit before)."""
    net = make(nets, name)
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager", dynamic=True)
    with torch.no_grad():
        for batch in (3, 5, 8):
            x = inputs(name, batch, seed=batch)
            want = net(x)
            assert want.abs().max() > 1e-3  # not a comparison of zeros
            torch.testing.assert_close(compiled(x), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ("until", "implicit", "fista_until", "admm", "kmeans"))
def test_compile_training_gives_the_eager_gradients(nets, name):
    """Training under torch.compile (not fullgraph: the loop of `unroll until` keeps its per-iteration
    bool(), a graph break, so that autograd sees every iteration or the implicit layer)."""
    net = make(nets, name)
    x = inputs(name, 6)
    params = [p for p in net.parameters() if p.requires_grad]
    out = net(x)
    if name in FIXED_POINTS:  # a sample whose code is 0: its relative change was 0/0 in AOTAutograd's backward (NaN)
        assert bool((out == 0).all(-1).any()) and bool((out != 0).any(-1).any())
    want = torch.autograd.grad(out.square().sum(), params)
    torch._dynamo.reset()
    got = torch.autograd.grad(torch.compile(net, backend="aot_eager")(x).square().sum(), params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", FIXED_POINTS + ("admm",))
def test_torch_export_with_a_dynamic_batch(nets, name):
    net = make(nets, name)
    exported = torch.export.export(net, (inputs(name, 8),), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    for batch in (1, 5):
        x = inputs(name, batch, seed=batch + 10)
        with torch.no_grad():  # backward implicit's extra layer is training's; the export is inference
            want = net(x)
        torch.testing.assert_close(exported.module()(x), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ("until", "implicit", "fista_until", "admm_cg"))
@pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")
def test_onnx_in_onnxruntime(nets, name, tmp_path):
    """`unroll until` as an ONNX Loop (its while_loop); ADMM through the documented fallback, solve =
    cg(iters = n), against the module with the direct solve (float32: within 1e-4 after the iterations)."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    net = make(nets, name, torch.float32).eval()
    program = torch.onnx.export(net, (inputs(name, 8, torch.float32),), dynamo=True, input_names=["x"],
                                dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, verbose=False)
    program.save(str(tmp_path / "net.onnx"))
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    reference = make(nets, "admm" if name == "admm_cg" else name, torch.float32)
    for batch in (3, 11):
        x = inputs(name, batch, torch.float32, seed=batch)
        got, = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            want = reference(x).numpy()
        assert got.shape == want.shape and np.abs(want).max() > 1e-3
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_onnx_of_a_direct_solve_is_refused_by_the_exporter(nets):
    """No ONNX op solves a linear system: `derive admm` with its direct solve does not export (the cell that
    says no, and why: use solve = cg(iters = k))."""
    pytest.importorskip("onnxscript")
    net = make(nets, "admm", torch.float32).eval()
    with pytest.raises(Exception, match="(?s)ONNX.*(solve|cholesky)|(solve|cholesky).*ONNX"):
        torch.onnx.export(net, (inputs("admm", 4, torch.float32),), dynamo=True, verbose=False)
