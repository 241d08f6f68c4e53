"""Update programs: multi-state `update { ... }` blocks with `let` temporaries, read simultaneously."""
import numpy as np
import torch

from conftest import build, dictionary, sparse_batch
from test_algorithms import fista_reference

FISTA_BY_HAND = """
# FISTA written as an update: every right-hand side reads the previous states
network HandFISTA
dims   m, n
input  x : R[m]
param  D : R[m, n]
hyper  lam = 0.1
let    L = opnorm(D)^2
var    z : R[n] = 0
var    y : R[n] = 0
var    t : R = 1
update {
  let v = y - D.T @ (D @ y - x) / L
  let z_next = soft(v, lam / L)
  let t_next = (1 + sqrt(1 + 4 * t^2)) / 2
  y <- z_next + (t - 1) / t_next * (z_next - z)
  z <- z_next
  t <- t_next
}
unroll 12
output z
"""


def test_hand_written_fista_block_equals_beck_teboulle():
    Net = build(FISTA_BY_HAND)
    D = dictionary(15, 30)
    x, _ = sparse_batch(D, 4)
    zs = Net(D=torch.tensor(D), lam=0.05)(torch.tensor(x), trace=True)
    for got, want in zip(zs, fista_reference(D, x, 0.05, 12)):
        assert np.abs(got.numpy() - want).max() < 1e-9


def test_simultaneous_assignment_swaps_states():
    """a <- b, b <- a must swap (both read the previous values), not copy one into the other."""
    Net = build("""
network Swap
dims n
input x : R[n]
var a : R[n] = x
var b : R[n] = 2 * x
update {
  a <- b
  b <- a
}
unroll 3
output a
""")
    x = torch.arange(1.0, 4.0).reshape(1, 3)
    outs = Net(n=3)(x, trace=True)
    assert torch.equal(outs[0], 2 * x) and torch.equal(outs[1], x) and torch.equal(outs[2], 2 * x)


def test_typed_let_is_checked(tmp_path):
    from conftest import run_dpc
    path = tmp_path / "let.dp"
    path.write_text("network N\ndims m, n\ninput x : R[m]\nparam D : R[m, n]\n"
                    "let G : R[m, m] = D.T @ D\nvar z : R[n] = 0\nminimize 0.5 * sqnorm(x - D @ z)\n"
                    "derive gd\nunroll 2\n")
    result = run_dpc("check", str(path))
    assert result.returncode == 1
    assert ":5:19: error: let G is declared R[m, m] but computes R[n, n]" in result.stderr
