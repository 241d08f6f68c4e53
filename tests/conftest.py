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


# --- dense numpy references of the image operators and of the splitting methods on them (float64) ---

PAD_MODES = {"circular": "wrap", "reflect": "reflect", "zero": "constant"}  # conv's pad -> np.pad's mode


def conv_matrix(K, h, w, mode):
    """The (h*w) x (h*w) matrix of u -> correlation of u (padded by (s-1)//2 before, s//2 after, np.pad's
    `mode`) with the s0 x s1 filter K, column by column from the unit images."""
    s0, s1 = K.shape
    M = np.zeros((h * w, h * w))
    for i in range(h * w):
        e = np.zeros(h * w)
        e[i] = 1
        pad = np.pad(e.reshape(h, w), (((s0 - 1) // 2, s0 // 2), ((s1 - 1) // 2, s1 // 2)), mode=PAD_MODES[mode])
        out = sum(K[a, b] * pad[a:a + h, b:b + w] for a in range(s0) for b in range(s1))
        M[:, i] = out.ravel()
    return M


def conv_bank_matrix(K, h, w, mode):
    """A filter bank K (k, s, s) as one (k*h*w) x (h*w) matrix: each filter's conv_matrix, stacked."""
    return np.vstack([conv_matrix(f, h, w, mode) for f in K])


def grad2d_matrix(h, w):
    """grad2d's matrix: forward differences along h then w, Neumann (the last one 0)."""
    def fd(n):
        M = np.zeros((n, n))
        for i in range(n - 1):
            M[i, i], M[i, i + 1] = -1, 1
        return M
    return np.vstack([np.kron(fd(h), np.eye(w)), np.kron(np.eye(h), fd(w))])


def derivative_filters():
    """Two 3 x 3 forward-difference filters (along w, along h)."""
    D = np.zeros((2, 3, 3))
    D[0, 1, 1], D[0, 1, 2], D[1, 1, 1], D[1, 2, 1] = -1, 1, -1, 1
    return D


def deconv_text(learn: bool = False) -> str:
    """examples/deconv_shrinkage.dp, without its learn line unless `learn`."""
    import re
    text = (EXAMPLES / "deconv_shrinkage.dp").read_text()
    return text if learn else re.sub(r"(?m)^learn\b.*$", "", text)


def admm_numpy(f, K, Dm, lam, rho, layers):
    """Scaled ADMM with dense matrices from u = f: u <- solve(K.T K + rho D.T D, K.T f + rho D.T (w - v)), w, v."""
    A = K.T @ K + rho * Dm.T @ Dm
    out, (u, w, v) = [], (f.ravel(), np.zeros(Dm.shape[0]), np.zeros(Dm.shape[0]))
    for _ in range(layers):
        u = np.linalg.solve(A, K.T @ f.ravel() + rho * Dm.T @ (w - v))
        w_next = soft(Dm @ u + v, lam / rho)
        v = v + Dm @ u - w_next
        w = w_next
        out.append(u.reshape(f.shape))
    return out


def hqs_numpy(f, K, Dm, lam, beta0, growth, layers):
    """Half-quadratic splitting with dense matrices from u = f, every stage's u (beta grows by `growth`)."""
    out, u = [], f.ravel()
    for t in range(layers):
        beta = beta0 * growth ** t
        w = soft(Dm @ u, lam / beta)
        u = np.linalg.solve(K.T @ K + beta * Dm.T @ Dm, K.T @ f.ravel() + beta * Dm.T @ w)
        out.append(u.reshape(f.shape))
    return out


def edited_compile(edit):
    """A fuzz compile hook: the real compile with the module's source edited by `edit` (a miscompile on purpose)."""
    def compile_(text, file, overrides):
        from dpc.api import compile_with_program
        program, source = compile_with_program(text, file, overrides)
        changed = edit(source)
        assert changed != source
        return program, changed
    return compile_


def run_dpc(*args, cwd=None):
    """Run the installed CLI as a user would."""
    return subprocess.run([sys.executable, "-m", "dpc", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
