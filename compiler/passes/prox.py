"""The proximal-operator table: which objective terms are prox-able, and their closed forms.

g(z) = sum of penalties on the var (c*norm1(z), c*norm0(z), c*norm2(z), c*sqnorm(z)) plus the
indicator of a constraint. prox_{s g}(v) = argmin_u g(u) + ||u - v||^2 / (2 s).

Rules (each exact, elementwise):
  a*norm1                 soft(v, s*a)
  a*norm1, z >= 0         softpos(v, s*a) = max(v - s*a, 0)
  a*norm1, box(lo, hi)    clamp(soft(v, s*a), lo, hi)   (1-D convex: clip the unconstrained minimiser)
  b*norm0                 hard(v, sqrt(2*s*b))          (keep v where v^2/2 > s*b)
  z >= 0                  relu(v)
  box(lo, hi)             clamp(v, lo, hi)
  z in simplex            sparsemax(v)                  (Euclidean projection onto the simplex; a*norm1
                                                          is the constant a there and drops out)
  g*norm2                 blocksoft(v, s*g)             v * max(1 - s*g/||v||, 0), 0 at v = 0
  z in ball(r)            projball(v, r)                v * min(1, r/||v||)
  z in l1ball(r)          projl1ball(v, r)              soft(v, theta), theta by sorting |v| (Duchi et al. 2008)
  z in sparse(k)          topk(v, k)                    the k largest |v_i| kept (iterative hard thresholding)
  a*nuclear(Z)            svt(V, s*a)                   U max(S - s*a, 0) V^T: singular-value thresholding
  a*norm21(Z)             rowsoft(V, s*a)               every row v * max(1 - s*a/||v||, 0) (group lasso by rows)
  c*sqnorm(z) (ridge)     prox_{s g}(v) = prox_{s' h}(v / (1 + 2 s c)), s' = s / (1 + 2 s c)
                          for g = h + c*||z||^2: a scaling around any rule above.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import sympy as sp

from dpc import atoms, declare


def _penalty_kind(atom_class) -> str | None:
    """The prox kind an atom declares (`prox` rule: norm1, norm0, ridge), or None."""
    atom = declare.BY_CLASS.get(atom_class)
    return atom.prox if atom is not None else None


@dataclass(frozen=True)
class Penalty:
    kind: str      # norm1 | norm0 | ridge
    weight: sp.Basic
    term: sp.Basic  # as written in the objective, for error spans


@dataclass(frozen=True)
class Projection:
    """`z in ball(r)`, `z in l1ball(r)`, `z in sparse(k)`: a set whose projection is an atom."""

    set: str
    arg: sp.Basic


# set -> (its projection atom, what its argument must be, why)
PROJECTIONS: dict[str, tuple[Callable, str, str]] = {
    "ball": (atoms.ProjBall, "nonnegative", "the radius of ball(r)"),
    "l1ball": (atoms.ProjL1Ball, "nonnegative", "the radius of l1ball(r)"),
    "sparse": (atoms.TopK, "positive", "the count of sparse(k)"),
}


class NoProx(Exception):
    """No closed-form prox is known; `term` is the offending objective term."""

    def __init__(self, term, reason: str):
        super().__init__(reason)
        self.term = term
        self.reason = reason


def as_penalty(term, var) -> Penalty | None:
    """c*atom(var) with c free of var -> Penalty; None when the term is not of that form."""
    found = [a for a in term.atoms(atoms.ScalarAtom) if a.has(var)]
    if len(found) != 1 or _penalty_kind(type(found[0])) is None or found[0].args[0] != var:
        return None
    # the factors beside the atom (not simplify(term / atom): simplify rewrites inside other atoms' arguments)
    weight, rest = term.as_independent(found[0], as_Add=False)
    if rest != found[0] or weight.has(var):
        return None
    return Penalty(_penalty_kind(type(found[0])), weight, term)


def is_nonsmooth(term, var) -> bool:
    """Terms that need a prox: a declared scalar atom with no derivative (a norm that is not differentiable at
    0), applied to anything with var."""
    return any(type(a) in declare.BY_CLASS and declare.BY_CLASS[type(a)].derivative is None
               for a in term.atoms(atoms.ScalarAtom) if a.has(var))


def build_prox(penalties: list[Penalty], box, step):
    """-> (prox: v -> expr, description). box is (lo, hi), "simplex" or None."""
    weights = {"norm1": sp.Integer(0), "norm0": sp.Integer(0), "norm2": sp.Integer(0), "ridge": sp.Integer(0),
               "nuclear": sp.Integer(0), "norm21": sp.Integer(0)}
    first = {}
    for p in penalties:
        weights[p.kind] = weights[p.kind] + p.weight
        first.setdefault(p.kind, p.term)
    a, b, c, g = weights["norm1"], weights["norm0"], weights["ridge"], weights["norm2"]
    matrix = [k for k in ("nuclear", "norm21") if weights[k] != 0]
    if matrix and (len(matrix) > 1 or a != 0 or b != 0 or g != 0 or box is not None):
        raise NoProx(first[matrix[0]], f"{matrix[0]} with another norm or a constraint has no closed-form proximal "
                     "operator here")
    if a != 0 and b != 0:
        raise NoProx(first["norm0"], "norm1 and norm0 together have no closed-form proximal operator here")
    if g != 0 and (a != 0 or b != 0 or box is not None):
        raise NoProx(first["norm2"], "norm2 with another norm or a constraint has no closed-form proximal "
                     "operator here")
    if b != 0 and box is not None:
        raise NoProx(first["norm0"], "norm0 with a constraint has no closed-form proximal operator here")
    if isinstance(box, Projection) and (a != 0 or b != 0):
        raise NoProx(first["norm1" if a != 0 else "norm0"], f"a norm with `in {box.set}(...)` has no closed-form "
                     "proximal operator here")
    if box == "simplex":
        a = sp.Integer(0)  # norm1 is 1 on the simplex: a constant, no effect on the minimiser

    scale = 1 + 2 * step * c if c != 0 else sp.Integer(1)
    s = step / scale

    def core(v):
        if box == "simplex":
            return atoms.Sparsemax(v)
        if isinstance(box, Projection):  # a ridge scaled v first: c||u||^2 + ||u - v||^2/(2s) is, up to a
            # constant, a multiple of ||u - v/(1 + 2sc)||^2, so over any set the minimiser is the projection
            return PROJECTIONS[box.set][0](v, box.arg)
        if weights["nuclear"] != 0:
            return atoms.SVT(v, s * weights["nuclear"])
        if weights["norm21"] != 0:
            return atoms.RowSoft(v, s * weights["norm21"])
        if g != 0:
            return atoms.BlockSoft(v, s * g)
        if a != 0:
            if box is not None and box[0] == 0 and box[1] == sp.oo:
                return atoms.SoftPos(v, s * a)
            out = atoms.Soft(v, s * a)
            return atoms.Clamp(out, *box) if box is not None else out
        if b != 0:
            return atoms.Hard(v, sp.sqrt(2 * s * b))
        if box is not None:
            if box[0] == 0 and box[1] == sp.oo:
                return atoms.Relu(v)
            return atoms.Clamp(v, *box)
        return v

    def prox(v):
        return core(v * (1 / scale) if c != 0 else v)

    parts = []
    if a != 0 and box != "simplex":
        parts.append("soft threshold" if box is None else
                     ("shifted relu" if box == (0, sp.oo) else "soft threshold, then clip to the box"))
    if b != 0:
        parts.append("hard threshold")
    if g != 0:
        parts.append("block soft threshold")
    if weights["nuclear"] != 0:
        parts.append("singular-value thresholding")
    if weights["norm21"] != 0:
        parts.append("block soft threshold of every row")
    if isinstance(box, Projection):
        parts.append({"ball": "projection onto the ball", "l1ball": "projection onto the l1 ball",
                      "sparse": "keep the k largest magnitudes"}[box.set])
    if box == "simplex":
        parts.append("projection onto the simplex (sparsemax)")
    elif a == 0 and b == 0 and box is not None:
        parts.append("projection onto the box" if box != (0, sp.oo) else "projection onto z >= 0 (relu)")
    if c != 0:
        parts.append("scaled by 1/(1 + 2*step*c) for the ridge term")
    return prox, ", ".join(parts) or "identity"
