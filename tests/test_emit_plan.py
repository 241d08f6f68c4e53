"""The emitter's plan (dpc.backends.torch.plan), checked on its own, without reading generated text: what is
per layer and how it is stored, what is hoisted, batched, factored and folded, and the names invented."""
import pathlib

import numpy as np
import pytest
import torch

from dpc.api import compile_with_program
from dpc.backends.torch.emit import write_module
from dpc.backends.torch.plan import plan_module
from dpc.reference import evaluate

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"

ADMM_TV = """\
network TVADMM
dims n, p
input x : R[n]
param Dd : R[p, n]
hyper lam = 0.5
var z : R[n] = 0
minimize 0.5 * sqnorm(z - x) + lam * norm1(Dd @ z)
derive admm(rho = 2)
unroll 6
output z
"""

NO_FOLD = """\
network NoFold
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 0.1
let L = opnorm(D)^2
var z : R[n] = D.T @ x
minimize 0.5 * sqnorm(x - D @ z) + lam * norm1(z)
derive proxgrad(step = 1/L)
unroll 5
learn weights untied
output z
"""


def program_of(name=None, text=None):
    if name is not None:
        text = (EXAMPLES / f"{name}.dp").read_text()
    return compile_with_program(text, f"{name or 'prog'}.dp").program


def test_lista_plan_stacks_and_batches_w_lists_s_and_theta():
    plan = plan_module(program_of("lista"))
    assert plan.kind == "unrolled" and plan.loop == "k"
    assert plan.per_layer == ("W", "S", "theta")
    assert plan.stacked == ("W",)                  # read whole by the batched product
    assert plan.listed == ("S", "theta")           # nn.ParameterLists
    assert plan.frozen_first == ("S",)             # the folded first layer never reads S[0]
    (name, (matrix, vector)), = plan.all_layers.items()
    assert name == "Wx" and str(matrix) == "W" and str(vector) == "x"
    assert plan.copies == ("S", "theta")           # W is read only as the one product
    assert plan.hoisted == () and plan.factors == {}
    assert plan.first is not None                  # z = 0 folds: the first layer is soft(Wx, theta)
    assert {n for n, _ in plan.first.assigns} == {"z"}
    assert "S" not in {s.name for _, e in plan.first.equations() for s in e.free_symbols}
    assert plan.init_lets == ("L",) and plan.fixed_lets == ("L",) and plan.forward_lets == ()
    assert plan.starts == () and plan.trace == "zs"     # the folded first layer assigns z: its start is dead
    text = str(plan)
    assert "W (stacked), S (listed, copy 0 frozen), theta (listed)" in text
    assert "Wx[k] = W @ x" in text and "first layer (folded start):" in text


def test_sc2net_plan_hoists_the_tied_input_products():
    plan = plan_module(program_of("sc2net"))
    assert plan.per_layer == () and plan.all_layers == {}
    hoisted = dict(plan.hoisted)
    assert list(hoisted) == ["U_ix_b_i", "U_fx_b_f", "Wx"]
    assert str(hoisted["Wx"]) == "W*x" and str(hoisted["U_ix_b_i"]) == "U_i*x + b_i"
    reads = {s.name for _, e in plan.step.equations() for s in e.free_symbols}
    assert {"U_ix_b_i", "U_fx_b_f", "Wx"} <= reads and "U_i" not in reads


def test_admm_plan_factors_the_z_step_matrix_once():
    plan = plan_module(program_of(text=ADMM_TV))
    (matrix, factor), = plan.factors.items()
    assert factor.cholesky                         # eye + rho Dd.T Dd: positive definite by its derivation
    assert factor.factor == f"{matrix}_factor"
    assert matrix in plan.fixed_lets and matrix in plan.init_lets
    assert f"factored:             {matrix} (Cholesky: self.{matrix}_factor)" in str(plan)


def test_admm_net_plan_hoists_the_constant_product_of_the_per_layer_let():
    plan = plan_module(program_of("admm_net"))
    assert plan.listed == ("rho",) and plan.layer_lets == ("A",) and plan.factors == {}
    (name, product), = plan.let_products
    assert name == "DdTDd" and str(product) == "Dd.T*Dd"
    assert "DdTDd" in {s.name for s in plan.layer_let_values["A"].free_symbols}


def test_fixed_point_and_closed_form_plans():
    deq = plan_module(program_of("lasso_deq"))
    assert deq.kind == "fixed point" and deq.first is None and deq.fixed_point.implicit
    assert deq.fixed_point.iterate == "iterate" and deq.fixed_point.last_info == "last_info"
    assert set(deq.constrained) == {"lam"} and deq.constrained["lam"].raw == "lam_raw"  # lam >= 0: softplus
    kmeans = plan_module(program_of("kmeansnet"))
    assert kmeans.kind == "closed" and kmeans.step is None and kmeans.lets_before == ("W", "b")


def test_a_first_layer_that_does_not_fold_is_written_in_the_loop():
    program = program_of(text=NO_FOLD)
    plan = plan_module(program)
    assert plan.first is None and plan.frozen_first == ()
    source = write_module(plan, "nofold.dp")
    assert "for k in range(steps):" in source and "range(1, steps)" not in source
    namespace = {}
    exec(compile(source, "nofold.py", "exec"), namespace)  # noqa: S102 - the module just generated
    rng = np.random.default_rng(3)
    D, x = rng.standard_normal((6, 9)) / 3, rng.standard_normal((4, 6))
    got = namespace["NoFold"](D=torch.tensor(D))(torch.tensor(x), trace=True)
    want = evaluate(program, {"x": x}, params={"D": D}, trace=True)
    assert len(got) == len(want) == 5
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.detach().numpy(), w, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["lista", "admm_net", "lasso_deq", "sc2net"])
def test_the_plan_is_deterministic_and_writing_does_not_change_it(name):
    program = program_of(name)
    plan = plan_module(program)
    first = write_module(plan, f"{name}.dp")
    assert write_module(plan, f"{name}.dp") == first == write_module(plan_module(program), f"{name}.dp")
    assert str(plan) == str(plan_module(program))


SHARED = """\
network Nest
dims n
input x : R[n]
param W : R[n, n]
var z : R[n] = x
update z <- soft(W @ z + x, 0.1) + tanh(soft(W @ z + x, 0.1)) + exp(2) * tanh(W.T @ W @ z) - exp(2) * (W.T @ W @ z) / 9
unroll 3
output z
"""


def test_a_layer_computes_a_repeated_atom_call_or_matrix_product_once():
    program = program_of(text=SHARED)
    plan = plan_module(program)
    # the largest repeated call first: W @ z + x, only inside it, is not named; exp(2) (literals) never is
    assert plan.shared == ("soft_Wzx", "WTWz")
    assert [(n, str(e)) for n, e in plan.step.lets] == [("soft_Wzx", "Soft(W*z + x, 1/10)"), ("WTWz", "W.T*W*z")]
    assert "shared in a layer:    soft_Wzx, WTWz" in str(plan)
    source = write_module(plan, "nest.dp")
    assert source.count("_soft(") == 2 and source.count("torch.tanh(soft_Wzx)") == 1  # the helper's def + one call
    namespace = {}
    exec(compile(source, "nest.py", "exec"), namespace)  # noqa: S102 - the module just generated
    rng = np.random.default_rng(5)
    W, x = rng.standard_normal((7, 7)) / 4, rng.standard_normal((3, 7))
    got = namespace["Nest"](W=torch.tensor(W))(torch.tensor(x), trace=True)
    z, want = x, []  # numpy, written out
    for _ in range(3):
        v = z @ W.T + x
        s = np.sign(v) * np.maximum(np.abs(v) - 0.1, 0)
        p = z @ W.T @ W
        z = s + np.tanh(s) + np.exp(2) * np.tanh(p) - np.exp(2) * p / 9
        want.append(z)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.detach().numpy(), w, rtol=0, atol=1e-12)


def test_the_folded_first_layer_shares_too_and_examples_without_repeats_are_unchanged():
    plan = plan_module(program_of("admm_net"))  # Dd @ z_next: in w's soft and in u's update
    assert plan.shared == ("Ddz_next",)
    for step in (plan.first, plan.step):
        assert [n for n, _ in step.lets][:2] == ["z_next", "Ddz_next"]
    source = write_module(plan, "admm_net.dp")
    assert source.count("F.linear(z_next, self.Dd)") == 2  # once in the first layer, once in the loop
    for name in ("lista", "sc2net", "lasso_deq", "tv2d"):
        assert plan_module(program_of(name)).shared == ()
