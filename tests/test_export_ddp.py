"""The DDP column of docs/export.md for the constructs of tests/test_export_table.py: `unroll until` with
`backward unrolled`, `derive admm` (a solve) and the closed form (the k-means network), all three in one
spawn of two gloo processes on CPU (tests/test_ecosystem.py's harness). Each process trains on its half of
the batch; the result equals one process's SGD on the whole batch, parameter for parameter."""
from __future__ import annotations

import copy

import pytest

import numpy as np
import torch

from conftest import EXAMPLES, build
from test_ecosystem import free_port, perturbed, sgd_training
from test_export_table import ADMM, LASSO, M, N

TEXTS = {
    # lam = 1, tol = 1e-4: every sample stops within max, each at its own iteration (the warning is an error)
    "until": LASSO.format(name="Until", method="proxgrad", backward="unrolled")
    .replace("lam = 0.1", "lam = 1").replace("tol = 1e-7", "tol = 1e-4"),
    "admm": ADMM,
    "kmeans": (EXAMPLES / "kmeansnet.dp").read_text(encoding="utf-8"),
}


def constructor_args(name):
    rng = np.random.default_rng(0)
    if name == "admm":
        return {"Dd": torch.tensor(np.diff(np.eye(8), axis=0)), "steps": 4}
    if name == "kmeans":
        return {"C": torch.tensor(rng.standard_normal((N // 3, M)) * 0.3), "tau": 0.5}
    return {"D": torch.tensor(rng.standard_normal((M, N)) / np.sqrt(M))}


def batch(name, seed):
    size = 8 if name == "admm" else M
    return torch.tensor(np.random.default_rng(seed).standard_normal((16, size)))


def _ddp_worker(rank, world_size, port, start_states, data, results):
    """One process (module level: torch.multiprocessing.spawn pickles it by name)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        for name, state in start_states.items():
            x, target = data[name]
            share = slice(rank * len(x) // world_size, (rank + 1) * len(x) // world_size)
            module = build(TEXTS[name], f"{name}.dp")(**constructor_args(name))
            module.load_state_dict(state)
            sgd_training(DistributedDataParallel(module), x[share], target[share])
            if rank == 0:
                torch.save(module.state_dict(), results / f"{name}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.filterwarnings("error:.*unroll until:RuntimeWarning")
def test_ddp_of_until_admm_and_the_closed_form_trains_like_one_process(tmp_path):
    start = {name: build(text, f"{name}.dp")(**constructor_args(name)) for name, text in TEXTS.items()}
    for name in ("admm", "kmeans"):  # not `until`'s lam: perturbed, it can turn negative, and then no fixed point
        perturbed(start[name], 100)
    data = {}
    for name, module in start.items():
        x = batch(name, 1)
        with torch.no_grad():
            out = module(x)
        data[name] = (x, out + 0.3 * torch.randn(out.shape, generator=torch.Generator().manual_seed(2),
                                                 dtype=out.dtype))
    start_states = {name: module.state_dict() for name, module in start.items()}
    torch.multiprocessing.spawn(_ddp_worker, args=(2, free_port(), start_states, data, tmp_path), nprocs=2)
    for name, module in start.items():
        before = copy.deepcopy(module.state_dict())
        sgd_training(module, *data[name])
        trained = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        assert trained.keys() == module.state_dict().keys()
        moved = max((module.state_dict()[k] - before[k]).abs().max() for k in before)
        assert moved > 1e-4, name  # the training did something to compare
        for key, want in module.state_dict().items():
            torch.testing.assert_close(trained[key], want, rtol=0, atol=1e-12, msg=f"{name}.{key}")
