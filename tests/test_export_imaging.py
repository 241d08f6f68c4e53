"""The export cells of the image networks (issue 20): the generated TV2D (examples/tv2d.dp, derive pdhg with
grad2d) and TNRD (examples/tnrd.dp, derive gd with conv, `learn K, lam untied, influence untied`: its RBF influence
functions are the runtime helper _rbf, a custom autograd.Function when training; and the analytic-influence TNRD,
tnrd.dp without `influence untied`) under torch.compile
(fullgraph=True, dynamic shapes; inference equals eager, training gives eager's gradients) and torch.export
with a dynamic batch and image size (the exported program runs on sizes it was not traced at). Float64; as in
tests/test_export_table.py, each module is compiled from its .dp once (dpc.load registers it, as torch.export
needs) and the reference is the same module run eagerly."""
from __future__ import annotations

import pytest
import torch

import dpc
from conftest import EXAMPLES

SIZES = [(2, 9, 11), (3, 16, 12)]  # (batch, h, w): two batch sizes, two image sizes, none square


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    torch.manual_seed(0)
    tv = dpc.load(EXAMPLES / "tv2d.dp")(steps=4)
    tnrd = dpc.load(EXAMPLES / "tnrd.dp")(k=8, s=3)
    analytic_path = tmp_path_factory.mktemp("tnrd") / "tnrd_analytic.dp"
    analytic_path.write_text((EXAMPLES / "tnrd.dp").read_text().replace("lam untied, influence untied", "lam untied")
                             .replace("network TNRD", "network TNRDAnalytic"))
    analytic = dpc.load(analytic_path)(k=8, s=3)
    with torch.no_grad():  # every stage its own values, so that a wrong stage's copy shows
        for net in (tnrd, analytic):
            for t, (K, lam) in enumerate(zip(net.K, net.lam)):
                K.add_(0.05 * torch.randn_like(K))
                lam.fill_(0.05 + 0.01 * t)
        for t, phi in enumerate(tnrd.phi):
            phi.mul_(1 + 0.1 * t).add_(0.002 * torch.randn_like(phi))
    return {"tv2d": tv.double(), "tnrd": tnrd.double(), "tnrd_analytic": analytic.double()}


def image(batch, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 255 * torch.rand(batch, h, w, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", ["tv2d", "tnrd", "tnrd_analytic"])
def test_compile_fullgraph_dynamic_inference_equals_eager(nets, name):
    net = nets[name]
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager", dynamic=True)
    for size in SIZES:
        x = image(*size)
        with torch.no_grad():
            want, got = net(x), compiled(x)
        assert want.shape == x.shape and want.abs().max() > 1  # not zeros
        assert (want - x).abs().max() > 1e-3  # the layers move it
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name, count", [("tnrd", 15), ("tnrd_analytic", 10)])
def test_compile_training_gives_the_eager_gradients(nets, name, count):
    net = nets[name]
    params = list(net.parameters())
    assert len(params) == count  # K and lam (and phi), 5 stages each
    for size in SIZES:
        x = image(*size, seed=1)
        want = torch.autograd.grad(net(x).square().mean(), params)
        got = torch.autograd.grad(torch.compile(net, backend="aot_eager", dynamic=True)(x).square().mean(), params)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
        names = [n for n, _ in net.named_parameters()]
        # K (and phi) at every stage get a gradient, lam after the first (where u = f)
        assert all(w.abs().max() > 0 for n, w in zip(names, want) if not n.startswith("lam.") or n != "lam.0")


@pytest.mark.parametrize("name", ["tv2d", "tnrd", "tnrd_analytic"])
def test_torch_export_with_dynamic_batch_and_image_size(nets, name):
    net = nets[name]
    dims = {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("h", min=4, max=4096),
            2: torch.export.Dim("w", min=4, max=4096)}
    exported = torch.export.export(net, (image(2, 10, 13),), dynamic_shapes={"f": dims})
    for size in SIZES + [(1, 7, 20)]:
        x = image(*size, seed=2)
        with torch.no_grad():
            want = net(x)
        torch.testing.assert_close(exported.module()(x), want, rtol=0, atol=1e-12)
