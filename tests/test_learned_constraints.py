"""Learned values keep their requirements (issue 21 item 2): a learned hyper that must be > 0 or >= 0 is
trained as softplus of a raw parameter, one whose bound reads other values (PDHG's tau*sigma*opnorm(K)^2 < 1,
a step below 2/L) is also clamped; the untrained network is unchanged to 1e-12, the state_dict holds the raw
parameters, self.NAME is the value, and constrain=False keeps the raw parametrisation. Training the TV
examples at a learning rate that drives the raw values out of their sets keeps every constrained value in
its set (benchmarks/learned_constraints.py runs 5,000 steps)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import build

PDHG = """network TVPDHG
dims n, p
input x : R[n]
param Dd : R[p, n]
hyper lam = 0.5
hyper tau = 0.4
hyper sigma = 0.4
var z : R[n] = 0
minimize 0.5 * sqnorm(z - x) + lam * norm1(Dd @ z)
derive pdhg(tau = tau, sigma = sigma)
unroll 6
learn lam, tau, sigma untied
output z
"""
ADMM = """network ADMMNet
dims n, p
input x : R[n]
param Dd : R[p, n]
hyper lam = 0.5
hyper rho = 1
var z : R[n] = 0
minimize 0.5 * sqnorm(z - x) + lam * norm1(Dd @ z)
derive admm(rho = rho)
unroll 6
learn lam, rho untied
output z
"""
N = 12


def tv_problem(batch=8, seed=0):
    rng = np.random.default_rng(seed)
    clean = np.repeat(rng.standard_normal((batch, 3)), N // 3, axis=1)
    return np.diff(np.eye(N), axis=0), clean + 0.3 * rng.standard_normal(clean.shape), clean


def pdhg_numpy(Dd, x, lam, tau, sigma, T):
    z, y = np.zeros_like(x), np.zeros((len(x), Dd.shape[0]))
    zbar = z
    for _ in range(T):
        y = np.clip(y + sigma * zbar @ Dd.T, -lam, lam)
        z_new = (z - tau * y @ Dd + tau * x) / (1 + tau)
        zbar, z = 2 * z_new - z, z_new
    return z


def admm_numpy(Dd, x, lam, rho, T):
    n = Dd.shape[1]
    A = np.eye(n) + rho * Dd.T @ Dd
    z, w, u = np.zeros_like(x), np.zeros((len(x), Dd.shape[0])), np.zeros((len(x), Dd.shape[0]))
    for _ in range(T):
        z = np.linalg.solve(A, (x + rho * (w - u) @ Dd).T).T
        v = z @ Dd.T + u
        w = np.sign(v) * np.maximum(np.abs(v) - lam / rho, 0)
        u = u + z @ Dd.T - w
    return z


@pytest.fixture(scope="module")
def classes():
    return {"pdhg": build(PDHG, "pdhg.dp"), "admm": build(ADMM, "admm.dp")}


def test_untrained_networks_are_the_algorithms_to_1e12(classes):
    Dd, x, _ = tv_problem()
    X = torch.tensor(x)
    for constrain in (True, False):
        pdhg = classes["pdhg"](Dd=torch.tensor(Dd), lam=0.3, tau=0.45, sigma=0.5, constrain=constrain)
        np.testing.assert_allclose(pdhg(X).detach().numpy(), pdhg_numpy(Dd, x, 0.3, 0.45, 0.5, 6), rtol=0, atol=1e-12)
        admm = classes["admm"](Dd=torch.tensor(Dd), lam=0.3, rho=2.0, constrain=constrain)
        np.testing.assert_allclose(admm(X).detach().numpy(), admm_numpy(Dd, x, 0.3, 2.0, 6), rtol=0, atol=1e-12)


def test_state_dict_holds_raw_parameters_and_the_module_exposes_values(classes):
    Dd, _, _ = tv_problem()
    net = classes["admm"](Dd=torch.tensor(Dd), lam=0.3, rho=2.0)
    assert set(net.state_dict()) == {"Dd"} | {f"{n}_raw.{k}" for n in ("lam", "rho") for k in range(6)}
    assert type(net).per_layer_parameters == ("lam_raw", "rho_raw")
    rho = torch.stack(net.rho)
    torch.testing.assert_close(rho, torch.full((6,), 2.0, dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(torch.nn.functional.softplus(torch.stack(list(net.rho_raw))), rho)
    raw = classes["admm"](Dd=torch.tensor(Dd), lam=0.3, rho=2.0, constrain=False)
    assert float(raw.rho_raw[0].detach()) == 2.0 and raw.rho[0] is raw.rho_raw[0]  # the value itself
    text = repr(net)  # one line per per-layer list, not one per layer
    assert len(text.splitlines()) == 5 and "rho=6 layers, from 2 to 2" in text, text


def train(net, x, clean, steps, lr):
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        (net(x) - clean).square().mean().backward()
        optimizer.step()


def in_sets(net, Dd):
    """Every requirement of the learned values, checked on the values the layers use."""
    values = {n: torch.stack(getattr(net, n)).detach() for n in ("lam", "tau", "sigma", "rho") if hasattr(type(net), n)}
    ok = {"lam": bool((values["lam"] >= 0).all())}
    if "rho" in values:
        ok["rho"] = bool((values["rho"] > 0).all())
    else:
        K = float(torch.linalg.matrix_norm(torch.tensor(Dd), ord=2)) ** 2
        ok["tau"], ok["sigma"] = bool((values["tau"] > 0).all()), bool((values["sigma"] > 0).all())
        ok["tau*sigma*|K|^2 < 1"] = bool((values["tau"] * values["sigma"] * K < 1).all())
    return ok


@pytest.mark.parametrize("name", ["pdhg", "admm"])
def test_training_at_a_large_learning_rate_stays_in_the_sets(classes, name):
    """Adam at lr 0.5 for 300 steps: trained on the values themselves (constrain=False), some leave their
    sets (the issue's probe: lam = -0.005, tau = -0.165, rho = -0.159); constrained, none does."""
    Dd, x, clean = tv_problem(batch=16, seed=1)
    X, C = torch.tensor(x), torch.tensor(clean)
    for constrain in (False, True):
        torch.manual_seed(0)
        net = classes[name](Dd=torch.tensor(Dd), constrain=constrain)
        train(net, X, C, 300, 0.5)
        ok = in_sets(net, Dd)
        assert all(ok.values()) if constrain else not all(ok.values()), (constrain, ok)
        assert torch.isfinite(net(X)).all()


def test_a_learned_step_stays_below_2_over_L():
    text = """network Step
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 0.1
hyper s = 0.5
var z : R[n] = 0
minimize 0.5*sqnorm(x - D @ z) + lam*norm1(z)
derive proxgrad(step = s)
unroll 4
learn lam, s
"""
    rng = np.random.default_rng(2)
    D = rng.standard_normal((8, 10)) / np.sqrt(8)
    net = build(text)(D=torch.tensor(D), s=0.2)
    assert abs(float(net.s) - 0.2) < 1e-15
    with torch.no_grad():
        net.s_raw.fill_(50.0)  # softplus(50) = 50, far past 2/L
    L = np.linalg.norm(D, 2) ** 2
    assert float(net.s) < 2 / L and float(net.s) > 0.999 * 2 / L
