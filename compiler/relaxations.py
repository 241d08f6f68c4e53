"""The relaxation table read by `relax TARGET -> METHOD(args)` (passes/relax.py).

A rule relaxes either a constraint set (onehot, binary) or an atom of the objective
(norm0). Set rules replace `var in TARGET` by a convex set and add a strongly convex
regulariser to the objective, chosen so that a linear cost <s, c> then has a known
minimiser (derive closed recognises it); atom rules replace the atom everywhere in the
objective. Each rule's docstring is its derivation; tests/test_kmeans.py checks each one
against a numerical minimiser.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import sympy as sp

from dpc import atoms


@dataclass(frozen=True)
class SetRelaxation:
    """What a set rule does to one constrained var: its new set and the term added to the objective."""

    set: str
    args: tuple
    term: sp.Basic
    minimiser: str  # the closed form of min <s, c> + term over the new set, for notes


@dataclass(frozen=True)
class Rule:
    target: str                   # the set or atom relaxed
    method: str                   # what it relaxes to, as written after ->
    params: tuple                 # ((name, default or None if required), ...)
    kind: str                     # "set" or "atom"
    apply: Callable
    summary: str                  # one line for notes and errors

    @property
    def derivation(self) -> str:
        return " ".join((self.apply.__doc__ or "").split())


def onehot_softmax(var, tau) -> SetRelaxation:
    """onehot -> softmax(tau). The one-hot vectors are the vertices of the simplex
    D = {s >= 0, sum(s) = 1}, so min over onehot of <s, c> picks the smallest c_j. Relax to all of
    D and add tau times the negative entropy: min_{s in D} <s, c> - tau*H(s), H(s) = -sum_j s_j log s_j.
    Stationarity with a multiplier m for sum(s) = 1: c_j + tau*(log s_j + 1) + m = 0, so
    s_j = exp(-c_j/tau) / Z > 0 (s >= 0 holds by itself) and s = softmax(-c/tau). The optimal value
    is -tau*logsumexp(-c/tau), within tau*log(k) below min_j c_j; as tau -> 0, s -> the one-hot argmin."""
    return SetRelaxation("simplex", (), -tau * atoms.Entropy(var), "softmax(-c/tau)")


def onehot_sparsemax(var, tau) -> SetRelaxation:
    """onehot -> sparsemax(tau), tau = 1 by default. Relax onehot to the simplex D and add the
    quadratic (Gini) regulariser (tau/2)*||s||^2: <s, c> + (tau/2)*||s||^2 = (tau/2)*||s + c/tau||^2
    - ||c||^2/(2 tau), so the minimiser over D is the Euclidean projection of -c/tau onto D:
    s = sparsemax(-c/tau) (Martins & Astudillo, 2016), exactly sparse where c_j is large."""
    return SetRelaxation("simplex", (), tau / 2 * atoms.SqNorm(var), "sparsemax(-c/tau)")


def binary_sigmoid(var, tau) -> SetRelaxation:
    """binary -> sigmoid(tau). Relax {0, 1}^n to the box [0, 1]^n and add tau times the negative
    binary entropy: min <s, c> - tau*sum_i H_b(s_i), H_b(p) = -p log p - (1 - p) log(1 - p). The
    problem separates; d/ds_i = c_i + tau*log(s_i / (1 - s_i)) = 0 gives s_i = sigmoid(-c_i/tau),
    strictly inside the box, so the box constraint is inactive."""
    return SetRelaxation("box", (sp.Integer(0), sp.Integer(1)), -tau * atoms.BinaryEntropy(var),
                         "sigmoid(-c/tau)")


def norm0_norm1(objective):
    """norm0 -> norm1. On the box ||z||_inf <= 1 the convex envelope (largest convex under-estimator)
    of ||z||_0 is ||z||_1, so every norm0(v) in the objective becomes norm1(v): lam*norm0(z) turns into
    lam*norm1(z), whose prox is the soft threshold instead of the hard one."""
    return objective.replace(atoms.Norm0, atoms.Norm1)


RULES: dict[tuple[str, str], Rule] = {(r.target, r.method): r for r in [
    Rule("onehot", "softmax", (("tau", None),), "set", onehot_softmax,
         "onehot -> simplex with entropy: argmin_{s in simplex} <s, c> - tau*entropy(s) = softmax(-c/tau)"),
    Rule("onehot", "sparsemax", (("tau", sp.Integer(1)),), "set", onehot_sparsemax,
         "onehot -> simplex with (tau/2)*sqnorm(s): argmin_{s in simplex} <s, c> + (tau/2)*sqnorm(s) "
         "= sparsemax(-c/tau)"),
    Rule("binary", "sigmoid", (("tau", None),), "set", binary_sigmoid,
         "binary -> box(0, 1) with binary entropy: argmin_{s in box(0, 1)} <s, c> - tau*bentropy(s) "
         "= sigmoid(-c/tau)"),
    Rule("norm0", "norm1", (), "atom", norm0_norm1, "norm0 -> norm1, its convex envelope on the unit box"),
]}


def targets() -> list[str]:
    return sorted({t for t, _ in RULES})


def methods_for(target: str) -> list[str]:
    return sorted(m for t, m in RULES if t == target)


def targets_for(method: str) -> list[str]:
    return sorted(t for t, m in RULES if m == method)


def methods() -> list[str]:
    return sorted({m for _, m in RULES})
