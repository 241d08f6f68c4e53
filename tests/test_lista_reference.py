"""Per-value tying (`learn weights untied except W`, docs/language.md "Per-value tying"): the reference LISTA
(examples/lista_reference.dp: one input weight W shared by all layers, S_t and theta_t per layer) is ISTA
untrained, stores W once and reads it in every layer; the other forms, the errors, explain and the reference
evaluator."""
import numpy as np
import pytest
import torch

import dpc
from conftest import EXAMPLES, build, dictionary, soft, sparse_batch
from dpc.api import compile_source, compile_with_program
from dpc.errors import DpcError
from dpc.pipeline import run_text
from dpc.reference import evaluate

T = 16


def ista_iterates(D, x, lam, steps):
    L = np.linalg.norm(D, 2) ** 2
    z = np.zeros((x.shape[0], D.shape[1]))
    out = []
    for _ in range(steps):
        z = soft(z - (z @ D.T - x) @ D / L, lam / L)
        out.append(z)
    return out


@pytest.fixture(scope="module")
def Reference():
    return dpc.load(EXAMPLES / "lista_reference.dp")


def test_reference_lista_untrained_is_ista_in_float64(Reference):
    D = dictionary(30, 60)
    x, _ = sparse_batch(D, batch=10)
    net = Reference(D=torch.tensor(D), lam=0.05)
    assert net.steps == T and net.W.dtype == torch.float64
    zs = net(torch.tensor(x), trace=True)
    want = ista_iterates(D, x, 0.05, T)
    assert len(zs) == T
    for k, (got, ref) in enumerate(zip(zs, want)):
        assert np.abs(got.detach().numpy() - ref).max() < 1e-9, f"layer {k}"


def test_one_input_weight_per_layer_state_weights_and_thresholds(Reference):
    D = dictionary(12, 25)
    net = Reference(D=torch.tensor(D), lam=0.1, steps=5)
    # W: one nn.Parameter (the same tensor object for every layer); S and theta: one parameter per layer
    assert isinstance(net.W, torch.nn.Parameter) and net.W.shape == (25, 12)
    assert isinstance(net.S, torch.nn.ParameterList) and isinstance(net.theta, torch.nn.ParameterList)
    assert len(net.S) == len(net.theta) == 5
    assert all(S.shape == (25, 25) and theta.shape == () for S, theta in zip(net.S, net.theta))
    assert len({id(S) for S in net.S}) == len({id(t) for t in net.theta}) == 5
    assert type(net).per_layer_parameters == ("S", "theta")
    keys = [k for k in net.state_dict() if k != "D"]
    assert keys == ["W"] + [f"S.{k}" for k in range(5)] + [f"theta.{k}" for k in range(5)]
    assert [n for n, p in net.named_parameters()].count("W") == 1


def _manual(net, x):
    """The reference LISTA by hand, every layer reading the module's own W tensor: z <- soft(x W^T + z S_k^T, theta_k)."""
    z = torch.zeros(x.shape[0], net.W.shape[0], dtype=x.dtype)
    out = []
    for k in range(net.steps):
        v = x @ net.W.mT + z @ net.S[k].mT
        z = torch.relu(v - net.theta[k]) - torch.relu(-v - net.theta[k])
        out.append(z)
    return out


def test_every_layer_reads_the_one_W_and_its_gradient_accumulates_across_layers(Reference):
    rng = np.random.default_rng(3)
    D = dictionary(12, 25)
    x = torch.tensor(sparse_batch(D, 8)[0])
    net = Reference(D=torch.tensor(D), lam=0.1, steps=6)
    with torch.no_grad():  # move every value, the copies apart: a layer reading another copy of W would show
        net.W.add_(0.05 * torch.tensor(rng.standard_normal(tuple(net.W.shape))))
        for S, theta in zip(net.S, net.theta):
            S.add_(0.05 * torch.tensor(rng.standard_normal(tuple(S.shape))))
            theta.mul_(float(rng.uniform(0.5, 1.5)))
    got = net(x, trace=True)
    want = _manual(net, x)
    assert all(torch.allclose(g, w, atol=1e-12) for g, w in zip(got, want))

    # the gradient of the one W is the sum of what each layer's use of it contributes: the same W, as
    # separate copies (one leaf per layer), gives per-layer gradients that add up to W.grad
    loss = sum(net.objective(x, z).mean() for z in got)
    loss.backward()
    copies = [net.W.detach().clone().requires_grad_() for _ in range(net.steps)]
    z = torch.zeros(x.shape[0], net.W.shape[0])
    manual_loss = 0
    for k in range(net.steps):
        v = x @ copies[k].mT + z @ net.S[k].detach().mT
        t = net.theta[k].detach()
        z = torch.relu(v - t) - torch.relu(-v - t)
        manual_loss = manual_loss + net.objective(x, z).mean()
    manual_loss.backward()
    per_layer = [c.grad for c in copies]
    assert all(g.abs().sum() > 0 for g in per_layer[1:])  # each layer contributes
    assert torch.allclose(net.W.grad, sum(per_layer), atol=1e-10)
    assert not torch.allclose(net.W.grad, per_layer[-1])


def test_reference_evaluator_takes_the_mix():
    text = (EXAMPLES / "lista_reference.dp").read_text()
    program, _ = compile_with_program(text, "lista_reference.dp")
    assert {d.name: d.per_layer for d in program.of_kind("weight")} == {"W": False, "S": True, "theta": True}
    rng = np.random.default_rng(0)
    D = dictionary(10, 20)
    x, _ = sparse_batch(D, 5)
    net = build(text, "lista_reference.dp")(D=torch.tensor(D), lam=0.1, steps=4)
    weights = {"W": net.W.detach().numpy() + 0.05 * rng.standard_normal(net.W.shape),
               "S": np.stack([S.detach().numpy() for S in net.S]) + 0.05 * rng.standard_normal((4, 20, 20)),
               "theta": np.array([float(t.detach()) for t in net.theta]) * rng.uniform(0.5, 1.5, 4)}
    with torch.no_grad():
        net.W.copy_(torch.tensor(weights["W"]))
        for k in range(4):
            net.S[k].copy_(torch.tensor(weights["S"][k]))
            net.theta[k].fill_(weights["theta"][k])
        got = net(torch.tensor(x), trace=True)
    want = evaluate(program, {"x": x}, {"D": D}, weights=weights, steps=4, trace=True)
    assert len(want) == 4 and all(np.abs(g.numpy() - w).max() < 1e-10 for g, w in zip(got, want))


def test_tied_W_is_one_product_before_the_loop():
    source = compile_source((EXAMPLES / "lista_reference.dp").read_text(), "lista_reference.dp")
    forward = source[source.index("    def forward(self"):source.index("    def objective")]
    assert forward.count("self.W") == 1  # W @ x once, before the layers
    assert "Wx = F.linear(x, self.W)" in forward.split("for k in range")[0]
    assert "self.W = nn.Parameter(" in source


def test_explain_says_which_values_are_tied():
    stages = run_text((EXAMPLES / "lista_reference.dp").read_text(), "lista_reference.dp")
    text = "\n".join(n.text for s in stages for n in s.program.notes)
    assert "weights: W shared by all layers; S, theta one copy per layer" in text
    from dpc.printing import format_program
    listing = format_program(stages[-1].program)
    assert "unroll 16, W tied; S, theta untied" in listing
    assert "weight W : R[n, m] = 1/L*D.T    # learned, shared by all layers" in listing
    assert "S : R[n, n] = eye(n) - 1/L*D.T @ D    # learned, one per layer" in listing


LASSO = """network Net
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 0.1
let L = opnorm(D)^2
var z : R[n] = 0
minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)
derive proxgrad(step = 1/L)
unroll 4
{learn}
output z
"""


def _tying(learn):
    program = run_text(LASSO.format(learn=learn))[-1].program
    return {d.name: d.per_layer for d in program.of_kind("weight")}


@pytest.mark.parametrize("learn, per_layer", [
    ("learn weights untied except W", {"W": False, "S": True, "theta": True}),
    ("learn weights untied except W tied", {"W": False, "S": True, "theta": True}),
    ("learn weights tied except theta", {"W": False, "S": False, "theta": True}),
    ("learn weights tied except S theta", {"W": False, "S": True, "theta": True}),
    ("learn weights untied except W S theta", {"W": False, "S": False, "theta": False}),
    ("learn weights coupled untied except W", {"W": False, "theta": True}),
    ("learn weights untied coupled except theta", {"W": True, "theta": False}),
    ("learn stepsizes untied except gamma", {"gamma": False, "theta": True}),
    ("learn weights untied", {"W": True, "S": True, "theta": True}),
    ("learn weights tied", {"W": False, "S": False, "theta": False}),
])
def test_forms_tie_what_they_say(learn, per_layer):
    assert _tying(learn) == per_layer


def test_mixed_forms_agree_with_the_reference_evaluator():
    rng = np.random.default_rng(1)
    D = dictionary(8, 14)
    x, _ = sparse_batch(D, 4)
    for learn in ("learn weights tied except theta", "learn weights coupled untied except W",
                  "learn stepsizes tied except theta", "learn weights untied except S"):
        text = LASSO.format(learn=learn)
        program, _ = compile_with_program(text, "net.dp")
        net = build(text)(D=torch.tensor(D))
        weights = {}
        with torch.no_grad():
            for d in program.of_kind("weight"):
                value = getattr(net, d.name)
                for copy in (value if isinstance(value, torch.nn.ParameterList) else [value]):
                    copy.mul_(torch.tensor(rng.uniform(0.8, 1.2, tuple(copy.shape))))
                weights[d.name] = (np.stack([c.numpy() for c in value]) if isinstance(value, torch.nn.ParameterList)
                                   else value.numpy().copy())
            got = net(torch.tensor(x), trace=True)
        want = evaluate(program, {"x": x}, {"D": D}, weights=weights, trace=True)
        assert all(np.abs(g.numpy() - w).max() < 1e-10 for g, w in zip(got, want)), learn


@pytest.mark.parametrize("learn, message", [
    ("learn weights except W", "say how the other weights are shared before except"),
    ("learn weights untied except", "name the weights that are tied"),
    ("learn weights untied except W untied", "take the other tying, tied"),
    ("learn weights untied except Q", r"'Q' after except names none of the weights learned \(W, S, theta\)"),
    ("learn weights untied except b", "'b' after except names none"),
    ("learn weights untied except W coupled", "'coupled' after except"),
    ("learn weights sideways except W", "unknown option 'sideways'"),
    ("learn stepsizes untied except W", "'W' after except names none of the weights learned \\(gamma, theta\\)"),
])
def test_except_errors_name_the_problem(learn, message):
    with pytest.raises(DpcError, match=message):
        run_text(LASSO.format(learn=learn))


def test_except_on_a_closed_form_is_an_error():
    text = LASSO.replace("derive proxgrad(step = 1/L)\nunroll 4", "derive closed")
    with pytest.raises(DpcError):
        run_text(text.format(learn="learn weights untied except W"))


def test_the_fuzzer_writes_per_value_tying_and_it_agrees_with_the_reference():
    import random
    import re

    from dpc.fuzz.check import classify
    from dpc.fuzz.generate import generate
    written = [text for text in (generate(random.Random(seed)) for seed in range(400))
               if re.search(r"^learn .*weights untied except W\b", text, re.M)]
    assert written
    outcomes = [classify(text, seed).outcome for seed, text in enumerate(written[:8])]
    assert "ok" in outcomes and set(outcomes) <= {"ok", "rejected", "too_large", "ill_conditioned"}, outcomes
