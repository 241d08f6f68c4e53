"""Regression tests for the failures a fuzzer found (issue "A compiler users can trust"), one per kind.

Each builds the program a user could write, runs what dpc generates in float64, and compares it with a
numpy loop written here (never with dpc's own evaluator), or checks the error a user gets.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from conftest import EXAMPLES, build, dictionary, layers, soft

from dpc.api import compile_source
from dpc.errors import DpcError

HEAD = "network N\ndims m, n\ninput x : R[m]\nparam D : R[m, n]\n"
SQUARE = "network N\ndims n\ninput x : R[n]\nparam D : R[n, n]\n"


def _error(text: str) -> str:
    with pytest.raises(DpcError) as info:
        compile_source(text, "prog.dp")
    return info.value.format()


def _rng_problem(m=6, n=6, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, n)) / np.sqrt(m), rng.standard_normal((batch, m))


# --- silent miscompilations: a scalar meeting a vector is a vector of that scalar ---------------------

def test_constant_start_is_a_vector_of_that_constant():
    """var z : R[n] = 1, z <- D @ z - x: the first layer is D @ ones - x (the row sums), not D - x."""
    D, x = _rng_problem()
    net = build(SQUARE + "var z : R[n] = 1\nupdate z <- D @ z - x\nunroll 3\n")(D=torch.tensor(D))
    z = np.ones((x.shape[0], D.shape[1]))
    for layer in range(3):
        z = z @ D.T - x
        assert np.allclose(net(torch.tensor(x), steps=layer + 1).numpy(), z, atol=1e-12)


@pytest.mark.parametrize("batch", [3, 40])  # 40 = n: the shapes used to agree by accident
def test_lista_started_at_half_equals_ista_started_at_half(batch):
    text = (EXAMPLES / "lista.dp").read_text().replace("var    z : R[n] = 0", "var    z : R[n] = 0.5")
    D = dictionary(20, 40)
    x = np.random.default_rng(3).standard_normal((batch, 20))
    net = build(text)(D=torch.tensor(D), lam=0.1)
    L = np.linalg.norm(D, 2) ** 2
    z = np.full((batch, 40), 0.5)
    for layer in range(16):
        z = soft(z - (z @ D.T - x) @ D / L, 0.1 / L)
        assert np.allclose(net(torch.tensor(x), steps=layer + 1).detach().numpy(), z, atol=1e-10)


def test_scalar_minus_product_is_a_vector():
    """D.T @ (c - D @ z) with a scalar c: (batch, n), c broadcast over the rows of D @ z."""
    D, x = _rng_problem(5, 7)
    net = build(HEAD + "hyper c = 2\nvar z : R[n] = 0\nupdate z <- z + 0.1 * D.T @ (c - D @ z) + D.T @ x\n"
                "unroll 3\n")(D=torch.tensor(D))
    z = np.zeros((x.shape[0], 7))
    for _ in range(3):
        z = z + 0.1 * (2 - z @ D.T) @ D + x @ D
    out = net(torch.tensor(x)).numpy()
    assert out.shape == (4, 7)
    assert np.allclose(out, z, atol=1e-12)


def test_matrix_plus_scalar_is_entrywise():
    D, x = _rng_problem(5, 7)
    net = build(HEAD + "let A = D + 1\nvar z : R[n] = 0\nupdate z <- 0.5 * z + A.T @ x\nunroll 2\n")(
        D=torch.tensor(D))
    z = np.zeros((4, 7))
    for _ in range(2):
        z = 0.5 * z + x @ (D + 1)
    assert np.allclose(net(torch.tensor(x)).numpy(), z, atol=1e-12)


# --- modules that did not work ---------------------------------------------------------------------------

def test_large_literal_is_a_float_in_the_module():
    D, x = _rng_problem()
    net = build(SQUARE + "var z : R[n] = 0\nupdate z <- 1e-30 * (1e30 * x) + 0 * z\nunroll 2\n")(
        D=torch.tensor(D))
    assert np.allclose(net(torch.tensor(x)).numpy(), x)


@pytest.mark.parametrize("update, reference", [
    ("sigmoid(D @ z)", lambda D, z: 1 / (1 + np.exp(-(z @ D.T)))),
    ("softmax(D @ z)", lambda D, z: np.exp(z @ D.T) / np.exp(z @ D.T).sum(-1, keepdims=True)),
    ("soft(D @ z, 0.1)", lambda D, z: soft(z @ D.T, 0.1)),
    ("0 * z", lambda D, z: 0 * z),
])
def test_update_folded_to_a_constant_keeps_the_batch_shape(update, reference):
    """From z = 0 the first layer is constant in the sample (sigmoid(0), softmax(0), soft(0, t), 0):
    still one row per sample, as a tensor."""
    D, x = _rng_problem()
    net = build(SQUARE + f"var z : R[n] = 0\nupdate z <- {update} + 0 * x\nunroll 3\n")(D=torch.tensor(D))
    z = np.zeros((4, 6))
    outs = net(torch.tensor(x), trace=True)
    for layer in range(3):
        z = reference(D, z)
        assert outs[layer].shape == (4, 6)
        assert np.allclose(outs[layer].numpy(), z, atol=1e-12)


def test_learn_param_beside_learn_weights_builds():
    """learn D makes L = opnorm(D)^2 a value of forward, yet the weights start at D.T / L in __init__."""
    text = (EXAMPLES / "lista.dp").read_text() + "learn D\n"
    D = dictionary(20, 40)
    net = build(text)(D=torch.tensor(D))
    L = np.linalg.norm(D, 2) ** 2
    assert np.allclose(net.W[0].detach().numpy(), D.T / L)
    x = torch.randn(3, 20)
    net.objective(x, net(x)).sum().backward()  # after learn weights, D is read by the objective only
    assert net.D.grad is not None and net.W.grad is not None


@pytest.mark.parametrize("second", ["learn weights", "learn stepsizes", "learn weights tied"])
def test_learning_weights_twice_is_an_error(second):
    text = (EXAMPLES / "lista.dp").read_text() + second + "\n"
    assert "already learned" in _error(text)


def test_zero_divisor_let_is_an_error_at_the_let():
    message = _error(HEAD + "hyper lam = 0.1\nlet L = 0\nvar z : R[n] = 0\n"
                     "update z <- soft(z - D.T @ (D @ z - x) / L, lam / L)\nunroll 2\n")
    assert message.startswith("prog.dp:6:5: error: L must be non-zero")


def test_zero_dictionary_is_a_value_error_naming_the_lipschitz_constant():
    net = build((EXAMPLES / "lista.dp").read_text())
    with pytest.raises(ValueError, match=r"^L must be finite and > 0"):
        net(D=torch.zeros(20, 40))


def test_nul_in_a_comment_keeps_the_module_importable():
    net = build(SQUARE + "# a \x00 b \x1b c\nvar z : R[n] = 0\nupdate z <- 0.5 * z + x\nunroll 2\n")(
        D=torch.eye(3))
    assert np.allclose(net(torch.ones(2, 3)).numpy(), 1.5)


@pytest.mark.parametrize("name", ["class", "lambda", "torch", "nn", "F", "int", "float", "super", "range"])
def test_network_name_that_would_break_the_module_is_an_error(name):
    message = _error(f"network {name}\ndims n\ninput x : R[n]\nvar z : R[n] = 0\nupdate z <- x\nunroll 1\n")
    assert message.startswith(f"prog.dp:1:9: error: '{name}' cannot name the network's class")


def test_param_named_like_a_class_attribute_is_an_error():
    message = _error("network N\ndims n\ninput x : R[n]\nparam per_layer_parameters : R[n]\n"
                     "var z : R[n] = 0\nupdate z <- x\nunroll 1\n")
    assert "prog.dp:4:7: error: 'per_layer_parameters' cannot name a value" in message


# --- programs the emitter could not handle are errors at the source -----------------------------------

def test_program_without_input_is_an_error():
    message = _error("network N\ndims n\nparam D : R[n]\nvar z : R[n] = 0\nupdate z <- D\nunroll 1\n")
    assert "declares no `input`" in message


def test_scalar_input_is_an_error_at_its_type():
    message = _error("network N\ndims n\ninput x : R\nparam C : R[n]\nvar z : R[n] = 0\n"
                     "update z <- (sum_j C[j] * x) * C\nunroll 1\n")
    assert message.startswith("prog.dp:3:11: error: input x is R; inputs are vectors")


@pytest.mark.parametrize("literal, what", [("1e309", "too large"), ("1e-99999", "too small"),
                                           ("9" * 5000, "too large"), ("1e99999", "too large")])
def test_literal_beyond_float64_is_an_error_at_the_literal(literal, what):
    message = _error(HEAD + f"hyper h = {literal}\nvar z : R[n] = 0\nupdate z <- h * D.T @ x\nunroll 1\n")
    assert message.startswith(f"prog.dp:5:11: error: the number") and what in message


def test_literal_arithmetic_beyond_float64_is_an_error():
    message = _error(HEAD + "var z : R[n] = 0\nupdate z <- 1e200^2 * D.T @ x + 1/0 * z\nunroll 1\n")
    assert "prog.dp:6:13: error: this power of literals gives a number float64 cannot hold" in message
    assert "prog.dp:6:35: error: division by zero" in message


# --- messages ---------------------------------------------------------------------------------------

def test_declaration_with_an_undeclared_dim_has_no_follow_on_errors():
    message = _error("network N\ndims m, n\ninput x : R[m]\nparam D : R[m, k]\nvar z : R[n] = 0\n"
                     "update z <- D.T @ x\nunroll 1\n")
    assert "'k' is not a declared dim" in message
    assert "undefined name 'D'" not in message
    assert message.count("error:") == 1


@pytest.mark.parametrize("size", ["1e-30", "2.5", "0"])
def test_eye_of_a_size_that_is_not_a_whole_number_is_a_located_error(size):
    """eye(1e-30) reached sympy's Identity and crashed (fuzz seed 82)."""
    message = _error(f"network N\ndims n\ninput x : R[n]\nvar z : R[n] = 0\nupdate z <- eye({size}) @ x\n"
                     "unroll 1\n")
    assert f"prog.dp:5:17: error: eye({size}): a size is a declared dim or a whole number" in message
    assert "hint: write a declared dim, e.g. eye(n)" in message and "internal error" not in message


def test_an_undeclared_dim_is_reported_once_where_first_used():
    message = _error("network N\ndims m\ninput x : R[k]\nparam D : R[k, k]\nvar z : R[k] = 0\n"
                     "update z <- D.T @ x\nunroll 1\n")
    assert "prog.dp:3:11: error: 'k' is not a declared dim" in message
    assert message.count("error:") == 1


def test_every_error_in_a_statement_is_reported():
    message = _error(HEAD + "hyper lam = 0.1\nvar z : R[n] = 0\n"
                     "minimize 0.5 * sqnorm(x - D @ w) + lam * norm1(q) + sqnorm(D @ x)\n"
                     "derive proxgrad\nunroll 2\n")
    assert "undefined name 'w'" in message and "undefined name 'q'" in message
    assert "cannot multiply D" in message
    assert len(re.findall(r"^prog\.dp:7:\d+: error", message, re.M)) == 3


# --- degenerate values ------------------------------------------------------------------------------

@pytest.mark.parametrize("old, new, expected", [
    ("lam = 0.1", "lam = -1", "prog.dp:7:8: error: lam must be finite and >= 0 (the weight of lam*norm1(z))"),
])
def test_default_that_breaks_the_derivation_is_an_error_at_the_hyper(old, new, expected):
    text = (EXAMPLES / "lista.dp").read_text().replace(old, new)
    assert _error(text).startswith(expected)


def test_negative_temperature_default_is_an_error():
    text = (EXAMPLES / "kmeansnet.dp").read_text().replace("tau = 0.1", "tau = -1")
    assert "tau must be finite and > 0 (softmax's tau)" in _error(text)


def test_constructor_checks_given_hypers():
    lista = build((EXAMPLES / "lista.dp").read_text())
    D = torch.tensor(dictionary(20, 40))
    with pytest.raises(ValueError, match=r"^lam must be finite and >= 0 .*got -1.0"):
        lista(D=D, lam=-1)
    with pytest.raises(ValueError, match="lam must be finite"):
        lista(D=D, lam=float("nan"))
    kmeans = build((EXAMPLES / "kmeansnet.dp").read_text())
    with pytest.raises(ValueError, match=r"^tau must be finite and > 0"):
        kmeans(C=torch.randn(4, 3), tau=-1)


@pytest.mark.parametrize("steps", [2.7, True, "3", 0, -1, torch.tensor(2.0)])
def test_steps_must_be_a_positive_integer(steps):
    lista = build((EXAMPLES / "lista.dp").read_text())
    D = torch.tensor(dictionary(20, 40))
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        lista(D=D, steps=steps)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        lista(D=D)(torch.randn(2, 20), steps=steps)


def test_integer_steps_of_other_types_are_accepted():
    lista = build((EXAMPLES / "lista.dp").read_text())
    net = lista(D=torch.tensor(dictionary(20, 40)), steps=np.int64(3))
    assert net.steps == 3 and len(net(torch.randn(2, 20), steps=torch.tensor(2), trace=True)) == 2


def test_input_of_another_dtype_is_a_value_error():
    net = build((EXAMPLES / "lista.dp").read_text())(D=torch.tensor(dictionary(20, 40)))
    with pytest.raises(ValueError, match=r"x must have dtype torch.float64 \(the dtype of D\), got torch.float32"):
        net(torch.randn(2, 20, dtype=torch.float32))
    with pytest.raises(ValueError, match="x must have dtype"):
        net(torch.ones(2, 20, dtype=torch.int64))


def test_a_size_of_one_in_a_type_is_an_error():
    """R[n, 1] is the vector R[n] in the algebra (a 1-column matrix took the vector path in the printer)."""
    message = _error("network N\ndims S\ninput x : R[S]\nparam Phi : R[S, 1]\nvar z : R[S] = 0\n"
                     "update z <- z + x\nunroll 1\n")
    assert message.startswith("prog.dp:4:13: error: a size of 1 in a type is ambiguous")


def test_thousands_of_errors_print_quickly_and_briefly():
    """A mutated file with 3000 mistakes on one 25 kB line: 50 errors shown, each line a window."""
    import time
    text = ("network N\ndims n\ninput x : R[n]\nvar z : R[n]\nminimize " + " + ".join(["sqnorm"] * 3000)
            + " + sqnorm(z - x)\nderive gd(step = 0.1)\nunroll 2\n")
    start = time.perf_counter()
    message = _error(text)
    assert time.perf_counter() - start < 10
    assert message.count("error:") == 50 and message.endswith("... and 2950 more errors (fix these first)")
    assert "'sqnorm' is a function, not a value" in message
    assert max(len(line) for line in message.splitlines()) < 200


@pytest.mark.parametrize("line, word", [("varz : R[n] = 0", "varz"), ("learnweights", "learnweights"),
                                        ("unroll2", "unroll2")])
def test_a_keyword_run_into_a_name_is_an_error(line, word):
    """`varz` used to declare z and `learnweights` to learn the weights: lark's contextual lexer matched the
    keyword as a prefix where only keywords can come."""
    text = "network N\ndims n\ninput x : R[n]\nvar y : R[n] = 0\nupdate y <- soft(y + x, 0.1)\n" + line + "\n"
    message = _error(text)
    assert message.startswith(f"prog.dp:6:1: error: syntax error: '{word}' runs the keyword")


def test_names_that_start_with_a_keyword_still_work():
    net = build("network N\ndims n\ninput x : R[n]\nparam letter : R[n]\nvar output_ : R[n] = 0\n"
                "update {\n  let variance = letter * x\n  output_ <- variance + output_\n}\nunroll 2\n")
    assert torch.allclose(net(letter=torch.ones(3))(torch.ones(2, 3)), 2 * torch.ones(2, 3))


def test_a_matrix_var_is_a_matrix_per_sample():
    """Once refused; a matrix state is a (batch, n, n) tensor (issue 19), and S @ x a batched product."""
    net = build("network N\ndims n\ninput x : R[n]\nparam M : R[n, n]\nvar z : R[n] = 0\nvar S : R[n, n] = M\n"
                "update {\n  z <- S @ x\n  S <- S / 2\n}\nunroll 2\n")
    M, x = torch.randn(3, 3), torch.randn(4, 3)
    assert torch.allclose(net(M=M)(x), 0.5 * x @ M.T)


def test_a_power_of_literals_is_checked_before_it_is_computed():
    import time
    start = time.perf_counter()
    compile_source(HEAD + "hyper mu = 2^-123456789012345678901234567890.5\nvar z : R[n] = 0\n"
                   "update z <- mu * D.T @ x + z\nunroll 1\n", "prog.dp")  # rounds to 0, as in float64
    message = _error(HEAD + "hyper mu = 2^123456789012345678901234567890.5\nvar z : R[n] = 0\n"
                     "update z <- mu * D.T @ x\nunroll 1\n")
    assert time.perf_counter() - start < 5
    assert "prog.dp:5:12: error: this power of literals gives a number float64 cannot hold" in message


def test_learn_weights_leaves_a_threshold_of_a_param_alone():
    """soft(D, 0.5) is a constant of the layer: only the threshold applied to the states is linearised."""
    D, x = _rng_problem(5, 4)
    net = build(HEAD + "hyper lam = 0.1\nvar z : R[n] = 0\n"
                "update z <- soft(z - 0.1 * D.T @ (D @ z - x), lam) + soft(D, 0.5).T @ x\nunroll 3\nlearn weights\n")(
        D=torch.tensor(D))
    z = np.zeros((4, 4))
    for _ in range(3):
        z = soft(z - 0.1 * (z @ D.T - x) @ D, 0.1) + x @ soft(D, 0.5)
    assert np.allclose(net(torch.tensor(x)).detach().numpy(), z, atol=1e-12)
    assert set(net.per_layer_parameters) == {"W", "S", "theta"}


def test_an_output_no_layer_assigns_stays_at_its_start():
    net = build("network N\ndims n\ninput x : R[n]\nvar z : R[n] = 0.5\nvar t : R[n] = 0\nupdate t <- t + x\n"
                "unroll 2\n")(n=3)
    assert torch.equal(net(torch.ones(2, 3)), torch.full((2, 3), 0.5))


def test_a_product_after_a_factor_is_parenthesised():
    """An entry of D.T @ v prints as `v @ D`; a * v @ D would be (a * v) @ D in Python."""
    D, x = _rng_problem(6, 2)
    net = build("network N\ndims q, p\ninput x : R[q]\nparam D : R[q, p]\n"
                "let L = sum_j clamp(D.T @ rowsqnorm(D), 0.05, 1)[j] * (D.T @ rowsqnorm(D))[j]\n"
                "var z : R[p] = 0\nupdate z <- z + L * D.T @ x\nunroll 1\n")(D=torch.tensor(D))
    v = (D * D).sum(1) @ D
    assert np.allclose(net(torch.tensor(x)).numpy(), (np.clip(v, 0.05, 1) @ v) * x @ D)


def test_a_sum_index_cannot_shadow_a_name():
    message = _error("network N\ndims p\ninput x : R[p]\nvar i : R[p] = x\nupdate i <- tanh(sum_i i[i]) * i\n"
                     "unroll 2\n")
    assert "prog.dp:5:18: error: sum_i: the index 'i' is already a name here" in message


def test_an_entry_of_a_broadcast_sum():
    """(z + 0.5)[j] is z[j] + 0.5 (sympy could not build the entry of a sum holding a broadcast)."""
    net = build("network N\ndims p\ninput x : R[p]\nvar z : R[p] = x\nupdate z <- tanh(sum_j (z + 0.5)[j]) * z\n"
                "unroll 2\n")(p=3)
    x = np.random.default_rng(1).standard_normal((4, 3)) / 3
    z = x
    for _ in range(2):
        z = np.tanh((z + 0.5).sum(-1, keepdims=True)) * z
    assert np.allclose(net(torch.tensor(x)).numpy(), z, atol=1e-12)


def test_inner_product_of_a_scaled_product():
    """(M @ y / 2) @ v: the scaled product inside the inner product stays a matrix-vector product."""
    rng = np.random.default_rng(2)
    M, v, y = rng.standard_normal((5, 3)), rng.standard_normal(5), rng.standard_normal((4, 3))
    net = build("network N\ndims w, d\ninput y : R[d]\nparam M : R[w, d]\nparam v : R[w]\nvar h : R[d]\n"
                "update h <- ((M @ y / 2) @ v) * y\nunroll 2\n")(M=torch.tensor(M), v=torch.tensor(v))
    assert np.allclose(net(torch.tensor(y)).numpy(), ((y @ M.T / 2) @ v)[:, None] * y, atol=1e-12)


def test_scalar_functions_keep_the_module_dtype():
    """exp/log/tanh of a scalar and norm0 (a count) are computed in the module's dtype: float32 stays
    float32, and a float64 module loses no precision to the default dtype."""
    text = ("network N\ndims q, r\ninput b : R[r]\nparam A : R[q, r]\nparam S : R[q]\nhyper lam = 0.3\n"
            "var h : R[q] = 0\nupdate h <- exp(lam) * sigmoid(norm0(S)) * A @ b + tanh(lam) * h\nunroll 2\n")
    cls = build(text)
    A, S, b = (torch.randn(*shape, dtype=torch.float32) for shape in ((3, 4), (3,), (2, 4)))
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        net64 = cls(A=A.double(), S=S.double())
        out64 = net64(b.double())
    finally:
        torch.set_default_dtype(old)
    assert cls(A=A, S=S)(b).dtype == torch.float32
    A, S, b = A.double().numpy(), S.double().numpy(), b.double().numpy()
    h = np.zeros((2, 3))
    for _ in range(2):
        h = np.exp(0.3) / (1 + np.exp(-np.count_nonzero(S))) * b @ A.T + np.tanh(0.3) * h
    assert out64.dtype == torch.float64 and np.allclose(out64.numpy(), h, rtol=1e-14)


def test_an_index_sum_whose_entries_cancel():
    net = build("network N\ndims r, d\ninput b : R[r]\ninput obs : R[d]\nvar z : R[d] = obs - 2\n"
                "update z <- z + (sum_i (b - b)[i] * b[i]) * obs\nunroll 2\n")(r=3, d=4)
    assert torch.equal(net(torch.ones(2, 3), torch.ones(2, 4)), torch.full((2, 4), -1.0))


def test_an_error_after_a_comment_ending_in_a_carriage_return_points_at_the_line():
    message = _error("hyper #\r")
    assert message.startswith("prog.dp:1:8: error: syntax error: unexpected end of line")


def test_a_dim_named_like_an_earlier_declaration_is_an_error():
    message = _error("network N\nhyper mu = 1\ndims m, mu\ninput y : R[m]\nvar w : R[mu] = 1\n"
                     "update w <- 0.5 * w\nunroll 1\n")
    assert message.startswith("prog.dp:3:9: error: 'mu' is declared twice")


def test_a_state_no_layer_assigns_but_later_layers_read():
    """w = 0 folds out of the first layer, yet the later layers read it: it must still start at 0."""
    net = build("network N\ndims r, S\ninput xs : R[r]\nparam Phi : R[r, S]\nvar w : R[S] = 0\n"
                "var t : R[S] = -2.0\nupdate t <- -3 * (w - t)\nunroll 2\noutput t\n")(Phi=torch.ones(2, 3))
    assert torch.equal(net(torch.ones(2, 2)), torch.full((2, 3), -18.0))


def test_a_coefficient_holding_a_broadcast_is_printed_as_it_is():
    """norm2(z + 0.01 + abs(z)) from z = 0 folds to norm2(0.01*ones): sympy's fraction/factor_terms failed on it."""
    net = build("network N\ndims d\ninput x2 : R[d]\nvar state : R[d] = 0\n"
                "update state <- norm2(state + (1E-2 + abs(state))) * exp(tanh(4 * x2))\nunroll 2\n")(d=3)
    x = np.random.default_rng(4).standard_normal((2, 3))
    z = np.zeros((2, 3))
    for _ in range(2):
        z = np.linalg.norm(z + 0.01 + np.abs(z), axis=1, keepdims=True) * np.exp(np.tanh(4 * x))
    assert np.allclose(net(torch.tensor(x)).numpy(), z, atol=1e-12)


def test_a_decimal_over_a_value_prints_as_a_quotient():
    """PDHG's default step printed as 0.99*1/normK; it is 0.99/normK, with parentheses where they are needed."""
    import sympy as sp
    from dpc.printing import math
    a, b = sp.symbols("a b", real=True)
    assert math(sp.Rational(99, 100) / a) == "0.99/a"
    assert math(sp.Rational(1, 2) / (a * b)) == "0.5/(a*b)"
    assert math(-sp.Rational(1, 2) / (a + b)) == "-0.5/(a + b)"
    assert math(sp.Rational(3, 2) * a) == "1.5*a"


# --- the long fuzz run: a root of a negative value, a float power past float64 ----------------------

ROOT_OF_HYPER = ("network N\ndims n\ninput u : R[n]\nhyper lam = 0.1\nvar z : R[n]\n"
                 "update z <- soft(0.5 * u, sqrt(lam))\nunroll 4\nlearn weights\n")


def test_root_of_a_negative_default_is_an_error_at_the_hyper():
    message = _error(ROOT_OF_HYPER.replace("lam = 0.1", "lam = -1"))
    assert "prog.dp:4:7: error: lam must be finite and >= 0 (the network takes a root of it)" in message


def test_root_of_a_negative_given_hyper_is_a_value_error():
    """Found by the long fuzz run: a Python float's root of -1 was complex (a TypeError in the constructor)."""
    cls = build(ROOT_OF_HYPER)
    with pytest.raises(ValueError, match=r"lam must be finite and >= 0 \(the network takes a root of it\), got -1"):
        cls(lam=-1.0, n=3)
    net = cls(lam=4.0, n=3)  # theta starts at sqrt(4) in every layer
    assert torch.equal(layers(net, "theta").detach(), torch.full((net.steps,), 2.0))


def test_logarithm_of_a_non_positive_default_is_an_error():
    text = HEAD + "hyper a = 0\nlet c = log(a)\nvar z : R[n]\nupdate z <- soft(D.T @ x, c)\nunroll 2\n"
    assert _error(text).startswith("prog.dp:5:7: error: a must be finite and > 0 (the network takes its logarithm)")


def test_a_let_past_float64_is_a_value_error_naming_it():
    cls = build("network N\ndims n\ninput u : R[n]\nhyper lam = 2\nlet c = lam^400\nvar z : R[n]\n"
                "update z <- soft(0.5 * u, c)\nunroll 2\n")
    with pytest.raises(ValueError, match=r"c = lam\^400 is past float64's range"):
        cls(lam=1e10, n=3)
    assert cls(lam=1.5, n=3).c == pytest.approx(1.5 ** 400, rel=1e-12)


def test_a_negative_huber_width_is_an_error_and_a_value_error():
    text = (HEAD + "hyper delta = 0.5\nhyper lam = 0.1\nvar z : R[n] = 0\n"
            "minimize sum(huber(x - D @ z, delta)) + lam*norm1(z)\nderive proxgrad\nunroll 2\n")
    assert "delta must be finite and >= 0 (the width of huber(v, d))" in _error(text.replace("delta = 0.5",
                                                                                               "delta = -0.5"))
    with pytest.raises(ValueError, match=r"delta must be finite and >= 0"):
        build(text)(D=torch.eye(3), delta=-1.0)


def test_a_sum_index_named_like_the_value_being_declared_is_an_error():
    """Found by the 100,000-program run: `var i : R = ... sum_i ...` made the dataflow graph a cycle (crash)."""
    text = ("network N\ndims n\ninput x : R[n]\nvar q : R[n] = x\nvar i : R = tanh(sum_i sigmoid(x[i]))\n"
            "update q <- 0.5 * q\nunroll 2\n")
    assert _error(text).startswith("prog.dp:5:18: error: sum_i: the index 'i' is the name being declared")


def test_support_selection_keeps_the_lower_index_among_ties():
    """_softss selects without sorting (kthvalue, then the first of the tied entries): on data full of ties it
    must pick what numpy's stable sort picks."""
    from dpc.backends.torch.runtime import namespace as helpers
    namespace = helpers("_softss")  # with _soft, which soft-thresholds the unselected entries
    rng = np.random.default_rng(4)
    v = rng.choice([-2.0, -1.0, 0.5, 1.0, 2.0], size=(50, 23))  # many equal magnitudes
    for layer, p, pmax in [(1, 13.0, 13.0), (3, 13.0, 50.0), (8, 30.0, 100.0), (1, 1.0, 1.0)]:
        got = namespace["_softss"](torch.tensor(v), 0.25, p, pmax, layer).numpy()
        k = min(int(min(layer * p, pmax) * 23 / 100 + 1e-6), 23)
        want = soft(v, 0.25)
        for row in range(50):
            top = np.argsort(-np.abs(v[row]), kind="stable")[:k]
            keep = np.zeros(23, bool)
            keep[top] = True
            keep &= np.abs(v[row]) > 0.25
            want[row, keep] = v[row, keep]
        np.testing.assert_array_equal(got, want)


def test_a_matrix_that_differs_per_sample_is_an_error_not_a_shape_error():
    """Found by the 100,000-program run: abs(bentropy(sigmoid(i)) * rownormalize(C)) @ ... compiled into code
    that failed with a tensor-size error at run time."""
    text = ("network N\ndims h, N2\ninput x2 : R[N2]\nparam C : R[h, h]\nvar i : R[h] = 0.5\n"
            "update i <- abs(bentropy(sigmoid(i)) * rownormalize(C)) @ relu(i)\nunroll 2\n")
    message = _error(text)
    assert message.startswith("prog.dp:6:1: error: abs(bentropy(sigmoid(i))*rownormalize(C)) is a matrix that "
                              "differs from sample to sample"), message
    # the same scaling applied to a vector is fine, and right
    ok = build(text.replace("abs(bentropy(sigmoid(i)) * rownormalize(C)) @ relu(i)",
                            "bentropy(sigmoid(i)) * (rownormalize(C) @ relu(i))"))
    C = np.random.default_rng(1).standard_normal((3, 3))
    x = np.zeros((2, 4))
    z = ok(C=torch.tensor(C), N2=4)(torch.tensor(x)).numpy()
    i = np.full(3, 0.5)
    R = C / np.linalg.norm(C, axis=1, keepdims=True)
    for _ in range(2):
        s = 1 / (1 + np.exp(-i))
        i = -(s * np.log(s) + (1 - s) * np.log(1 - s)).sum() * (R @ np.maximum(i, 0))
    np.testing.assert_allclose(z, np.tile(i, (2, 1)), rtol=0, atol=1e-12)
