"""A generated module in the PyTorch ecosystem: torch.export with a dynamic batch, training under
torch.compile, ONNX in onnxruntime, DistributedDataParallel over gloo, state_dict through
torch.save/torch.load, copy.deepcopy.

Four programs of different shapes: LISTA (untied layers, a buffer D), the k-means network (one layer,
a learned param with lets recomputed in forward), SC2Net (a tied recurrent cell with gates and two
states) and lista_update.dp, the update program of LISTA (its forward is lista.dp's line for line, so
the slow ONNX and DDP checks leave it out). Every parameter is perturbed from its algorithmic initial
value first, so that each one matters in the outputs compared (SC2Net's untrained gates are inert).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conftest import EXAMPLES, build, dictionary, sparse_batch

PROGRAMS = ("lista", "kmeansnet", "sc2net", "lista_update")
ONNX_PROGRAMS = PROGRAMS[:3]
LAYERS = 4  # enough to exercise the layer loop; export time grows with the unrolled depth
M, N = 12, 24  # input size and code size (k-means: M features, N // 3 clusters)


def network_class(name):
    return build((EXAMPLES / f"{name}.dp").read_text(encoding="utf-8"), f"{name}.dp")


def constructor_args(name, dtype, seed=0):
    if name == "kmeansnet":
        centroids = np.random.default_rng(seed).standard_normal((N // 3, M)) * 0.3
        return {"C": torch.tensor(centroids, dtype=dtype), "tau": 0.5}
    return {"D": torch.tensor(dictionary(M, N, seed=seed), dtype=dtype), "steps": LAYERS}


def perturbed(module, seed):
    """Every parameter moved by a small seeded amount: trained-looking weights, not the algorithm's."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


def network(name, dtype=torch.float64, seed=0):
    return perturbed(network_class(name)(**constructor_args(name, dtype, seed)), seed + 100)


def inputs(batch, dtype=torch.float64, seed=1):
    x, _ = sparse_batch(dictionary(M, N), batch=batch, p=0.2, seed=seed)
    return torch.tensor(x, dtype=dtype)


# --- (a) torch.export ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", PROGRAMS)
def test_torch_export_with_a_dynamic_batch_matches_the_module(name):
    net = network(name)
    batch = torch.export.Dim("batch", min=1)
    exported = torch.export.export(net, (inputs(8),), dynamic_shapes={"x": {0: batch}})
    for size in (1, 13):  # neither is the traced batch of 8
        x = inputs(size, seed=size)
        want = net(x)
        assert want.abs().max() > 1e-3  # the comparison below is not between zeros
        torch.testing.assert_close(exported.module()(x), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["lista", "lista_cpss", "sc2net"])
def test_training_under_torch_compile_gives_the_eager_gradients(name):
    """torch.compile traces the modules' training path too (the soft threshold takes _SoftCompiled there):
    outputs and every parameter's gradient equal eager's. aot_eager runs AOTAutograd's forward and backward
    graphs without inductor's C++ compile, which tests/test_lista.py exercises on the forward."""
    if name == "lista_cpss":
        net = perturbed(network_class(name)(D=torch.tensor(dictionary(M, N)), steps=LAYERS), 100)
    else:
        net = network(name)
    x = inputs(6)
    out = net(x)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=out.dtype)
    params = [p for p in net.parameters() if p.requires_grad]
    want = torch.autograd.grad(out, params, grad)
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="aot_eager")
    got_out = compiled(x)
    got = torch.autograd.grad(got_out, params, grad)
    torch.testing.assert_close(got_out, out, rtol=0, atol=1e-12)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


# --- (b) ONNX ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ONNX_PROGRAMS)
@pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")  # inside torch.onnx, not ours
def test_onnx_export_runs_in_onnxruntime_at_any_batch(name, tmp_path):
    pytest.importorskip("onnxscript", reason="torch.onnx's exporter needs onnxscript")
    ort = pytest.importorskip("onnxruntime")
    net = network(name, torch.float32).eval()  # no train/eval difference; eval() silences the warning
    # the dynamo exporter (torch 2.13's default); the legacy TorchScript one has no ONNX op for .mT
    program = torch.onnx.export(net, (inputs(8, torch.float32),), dynamo=True, input_names=["x"],
                                output_names=["out"], dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                                verbose=False)
    path = tmp_path / f"{name}.onnx"
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert isinstance(session.get_inputs()[0].shape[0], str)  # a named, symbolic batch axis
    for size in (3, 11):
        x = inputs(size, torch.float32, seed=size)
        want = net(x).detach().numpy()
        got, = session.run(None, {"x": x.numpy()})
        assert got.shape == want.shape and np.abs(want).max() > 1e-3
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# --- (c) DistributedDataParallel -----------------------------------------------------------------

DDP_PROGRAMS = ("lista", "sc2net")
SGD_STEPS, LEARNING_RATE = 3, 0.05


def sgd_training(module, x, target):
    """A few plain SGD steps on the mean loss: DDP averages gradients over processes, so the mean over
    each process's half equals the mean over the whole batch."""
    optimizer = torch.optim.SGD(module.parameters(), lr=LEARNING_RATE)
    for _ in range(SGD_STEPS):
        optimizer.zero_grad()
        (module(x) - target).square().sum(-1).mean().backward()
        optimizer.step()


def _ddp_worker(rank, world_size, store, start_states, x, target, results):
    """One process of the DDP run (module level: torch.multiprocessing.spawn pickles it by name). Its
    teardown is tests/test_export_ddp.py's (docs/export.md, "DDP and process teardown"): the DDP wrapper
    deleted and collected, a barrier, the process group destroyed while the interpreter is alive, and a
    file:// rendezvous (no TCP store thread on rank 0)."""
    import gc

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)  # two processes on two cores
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        share = slice(rank * len(x) // world_size, (rank + 1) * len(x) // world_size)
        for name, state in start_states.items():
            module = network_class(name)(**constructor_args(name, torch.float64))
            module.load_state_dict(state)
            ddp = DistributedDataParallel(module)
            sgd_training(ddp, x[share], target[share])
            del ddp
            gc.collect()
            if rank == 0:
                torch.save(module.state_dict(), results / f"{name}.pt")
        dist.barrier()
    finally:
        gc.collect()
        dist.destroy_process_group()


def test_ddp_on_two_processes_trains_like_one_process_on_the_whole_batch(tmp_path):
    x = inputs(16)
    target = torch.tensor(sparse_batch(dictionary(M, N), batch=16, p=0.2, seed=1)[1])
    start = {name: network(name) for name in DDP_PROGRAMS}
    start_states = {name: module.state_dict() for name, module in start.items()}
    torch.multiprocessing.spawn(_ddp_worker, args=(2, tmp_path / "store", start_states, x, target, tmp_path),
                                nprocs=2)
    for name, module in start.items():
        before = copy.deepcopy(module.state_dict())
        sgd_training(module, x, target)
        trained = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        assert trained.keys() == module.state_dict().keys()
        moved = max((module.state_dict()[k] - before[k]).abs().max() for k in before)
        assert moved > 1e-3, name  # the training did something to compare
        for key, want in module.state_dict().items():
            torch.testing.assert_close(trained[key], want, rtol=0, atol=1e-12, msg=f"{name}.{key}")


# --- (d) torch.save / torch.load, copy.deepcopy --------------------------------------------------

@pytest.mark.parametrize("name", PROGRAMS)
def test_state_dict_through_torch_save_restores_the_outputs(name, tmp_path):
    net = network(name, seed=0)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    fresh = network(name, seed=7)  # other dictionary or centroids, other perturbation
    x = inputs(6)
    assert not torch.allclose(fresh(x), net(x))
    fresh.load_state_dict(torch.load(tmp_path / "net.pt", weights_only=True))
    torch.testing.assert_close(fresh(x), net(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", PROGRAMS)
def test_deepcopy_gives_the_same_outputs_with_independent_parameters(name):
    net = network(name)
    x = inputs(6)
    want = net(x).detach().clone()
    twin = copy.deepcopy(net)
    torch.testing.assert_close(twin(x), want, rtol=0, atol=0)
    for (key, a), (_, b) in zip(net.state_dict().items(), twin.state_dict().items()):
        assert a.data_ptr() != b.data_ptr(), key
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(1.5)
    assert not torch.allclose(twin(x), want)
    torch.testing.assert_close(net(x), want, rtol=0, atol=0)  # the original did not move
