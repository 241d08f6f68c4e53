"""Shared fixtures: compile .dp text to a class, float64 throughout, small random problems."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(autouse=True)
def _float64():
    torch = pytest.importorskip("torch")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def build(text: str, name: str = "prog.dp", overrides=None):
    """Compile .dp source and exec the generated module; returns the network class."""
    from dpc.api import compile_source
    source = compile_source(text, name, overrides)
    namespace: dict = {"__name__": "dpc_test_generated"}
    exec(compile(source, name, "exec"), namespace)
    import torch
    classes = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
               and v.__module__ == "dpc_test_generated"]
    assert len(classes) == 1
    return classes[0]


def layers(net, name: str):
    """A per-layer value's copies as one tensor, layer k at [k], whether the module stores them stacked
    (a weight one batched product reads) or as an nn.ParameterList; differentiable to the copies."""
    import torch
    value = getattr(net, name)
    return value if isinstance(value, torch.Tensor) else torch.stack(list(value))


def learned_shapes(net) -> dict:
    """{name: shape} of the learned values, a per-layer value as its stack (steps, ...)."""
    names = dict.fromkeys(n.split(".")[0] for n, _ in net.named_parameters())
    return {n: tuple(layers(net, n).shape) for n in names}


def set_layers(net, name: str, values):
    """Copy `values` (layer k at [k]) into a per-layer value, stacked or a ParameterList."""
    import torch
    with torch.no_grad():
        for copy, value in zip(getattr(net, name), torch.as_tensor(values)):
            copy.copy_(value)


def load_benchmark(name: str):
    """benchmarks/NAME.py imported by path (the scripts are not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dictionary(m=20, n=40, seed=0):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((m, n)) / np.sqrt(m)
    return D / np.linalg.norm(D, axis=0)


def sparse_batch(D, batch=8, p=0.1, seed=1):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((batch, D.shape[1])) * (rng.random((batch, D.shape[1])) < p)
    return z @ D.T, z


def soft(v, t):
    return np.sign(v) * np.maximum(np.abs(v) - t, 0.0)


def run_dpc(*args, cwd=None):
    """Run the installed CLI as a user would."""
    return subprocess.run([sys.executable, "-m", "dpc", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
