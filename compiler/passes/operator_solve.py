"""Solves with operators (issue 20, item 3): the linear system of a u-step whose matrix is made of operators.

derive admm, hqs and pdhg on an objective with operators (conv, grad2d, diff) solve, once a layer,

    (c0 I + H + sum_i c_i A_i.T A_i) x = b

with A_i operators applied to the var (`conv(k, u, pad = circular)`, `grad2d(u)`), H a dense matrix (only on a
vector var, none on an image) and c0, c_i >= 0. Never a dense matrix of an operator:

  - every A_i a circular convolution and no H: the system is circulant, diagonal in the Fourier basis, and
    `circsolve` (atoms.CirculantSolve) solves it exactly by one rfft2, a division and one irfft2;
  - anything else (reflect or zero borders, grad2d, diff): `solve = cg(iters = k)` conjugate-gradient steps on
    the map p -> c0 p + H p + sum_i c_i A_i.T(A_i(p)) (atoms.OperatorCG, the adjoints the operators declare),
    warm-started at the previous var; k = DEFAULT_CG_ITERS unless the directive gives it.

`solve = fft` asks for the FFT solve and is an error where the system is not circulant; `solve = cg(iters = k)`
asks for CG even where the FFT applies (benchmarks/fft_vs_cg.py compares the two).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp
from sympy import MatAdd, MatMul, MatrixSymbol, ZeroMatrix

from dpc import atoms, declare
from dpc.grammar import ast
from dpc.ir import Directive, Program, make_symbol
from dpc.literals import MAX_UNROLL
from dpc.passes.splitting import fail
from dpc.printing import math

DEFAULT_CG_ITERS = 20
FFT = "fft"


class NotOperatorQuadratic(Exception):
    """The gradient has a term that is not c*u, c*A.T(A(u)), a dense H @ u or constant in u."""

    def __init__(self, term):
        super().__init__(str(term))
        self.term = term


@dataclass(frozen=True)
class OperatorSystem:
    """c0 I + H + sum_i c_i A_i.T A_i, each A_i an operator applied to var (A_i(var), e.g. conv(k, u))."""

    var: MatrixSymbol
    eye: sp.Basic = sp.Integer(0)
    dense: sp.Basic | None = None
    grams: tuple = field(default=())      # ((c_i, A_i(var)), ...)

    def scaled(self, c) -> "OperatorSystem":
        return OperatorSystem(self.var, c * self.eye, None if self.dense is None else c * self.dense,
                              tuple((c * ci, op) for ci, op in self.grams))

    def plus(self, other: "OperatorSystem") -> "OperatorSystem":
        dense = self.dense if other.dense is None else other.dense if self.dense is None else self.dense + other.dense
        grams = {op: c for c, op in self.grams}
        for c, op in other.grams:
            grams[op] = grams[op] + c if op in grams else c
        return OperatorSystem(self.var, self.eye + other.eye, dense, tuple((c, op) for op, c in grams.items()))

    def apply(self, x):
        """The system's map applied to x (an IR expression): c0 x + H x + sum_i c_i A_i.T(A_i(x))."""
        out = [self.eye * x] if self.eye != 0 else []
        if self.dense is not None:
            out.append(self.dense @ x)
        for c, op in self.grams:
            applied = op.xreplace({self.var: x})
            out.append(c * declare.of(op).linear.adjoint(applied, applied))
        return MatAdd(*out) if len(out) > 1 else out[0]

    def not_circulant(self):
        """The first operator that is not a circular convolution (None when the system is circulant)."""
        for _, op in self.grams:
            if not (isinstance(op, atoms.Conv) and atoms.PADS[int(op.args[2])] == "circular"):
                return op
        return None

    def text(self) -> str:
        parts = [] if self.eye == 0 else ["eye"] if self.eye == 1 else [f"{math(self.eye)}*eye"]
        if self.dense is not None:
            parts.append(math(self.dense))
        for c, op in self.grams:
            name = math(op)
            parts.append(f"{math(c)}*{name}.T {name}" if c != 1 else f"{name}.T {name}")
        return " + ".join(parts) or "0"


def _expand(e):
    """e as a list of (scalar coefficient, term): sums split, scalars pulled out, and every linear operator
    distributed over a sum in its operand (convT(k, 2*conv(k, u) - 2*f) -> 2 convT(k, conv(k, u)), -2 convT(k, f))."""
    if isinstance(e, ZeroMatrix):
        return []
    if isinstance(e, MatAdd):
        return [t for a in e.args for t in _expand(a)]
    if isinstance(e, MatMul):
        c, mats = e.as_coeff_matrices()
        if len(mats) == 1:
            return [(c * ci, t) for ci, t in _expand(mats[0])]
        return [(c, MatMul(*mats))]
    found = declare.of(e)
    if found is not None and found.linear is not None:
        i = found.linear.operand
        out = []
        for ci, t in _expand(e.args[i]):
            args = list(e.args)
            args[i] = t
            out.append((ci, e.func(*args)))
        return out
    return [(sp.Integer(1), e)]


def quadratic_parts(grad, var) -> tuple[OperatorSystem, sp.Basic | None]:
    """grad f(u) = H(u) + b with H an OperatorSystem -> (H, b); raises NotOperatorQuadratic at a term that is not
    c*u, c*A.T(A(u)) (A a declared operator of u itself), a dense D @ u, or constant in u."""
    eye, dense, grams, bias = sp.Integer(0), [], {}, []
    for c, t in _expand(grad):
        if c.has(var):
            raise NotOperatorQuadratic(c * t)
        if not t.has(var):
            bias.append(c * t)
        elif t == var:
            eye = eye + c
        elif isinstance(t, MatMul) and t.args[-1] == var and not MatMul(*t.args[:-1]).has(var):
            dense.append(c * MatMul(*t.args[:-1]))
        else:
            op = _gram_of(t, var)
            if op is None:
                raise NotOperatorQuadratic(c * t)
            grams[op] = grams[op] + c if op in grams else c
    bias_value = None if not bias else (MatAdd(*bias).doit() if len(bias) > 1 else bias[0])
    dense_value = None if not dense else (MatAdd(*dense).doit() if len(dense) > 1 else dense[0])
    return OperatorSystem(var, sp.simplify(eye), dense_value,
                          tuple((sp.simplify(c), op) for op, c in grams.items() if sp.simplify(c) != 0)), bias_value


def _gram_of(t, var):
    """A when t is A.T(A(var)) for a declared operator A applied to var itself, else None."""
    outer = declare.of(t)
    if outer is None or outer.linear is None:
        return None
    inner = t.args[outer.linear.operand]
    found = declare.of(inner)
    if found is None or found.linear is None or inner.args[found.linear.operand] != var:
        return None
    if any(a.has(var) for i, a in enumerate(inner.args) if i != found.linear.operand):
        return None
    return inner if found.linear.adjoint(inner, inner) == t else None


def solve_option(program: Program, directive: Directive, key: str):
    """`solve = fft` -> FFT, `solve = cg(iters = k)` -> k."""
    node = directive.kwarg(key)
    hint = "write solve = cg(iters = 10), or solve = fft (a circulant system), or leave solve out"
    if isinstance(node, ast.Name) and node.id == FFT:
        return FFT
    if not (isinstance(node, ast.Call) and node.func == "cg" and not node.args
            and [k for k, _ in node.kwargs] == ["iters"]):
        raise fail(program, f"derive {directive.name}'s solve must be cg(iters = k) or fft", node.span, hint)
    value = node.kwargs[0][1]
    if not (isinstance(value, ast.Number) and value.text.isdigit() and 1 <= int(value.text) <= MAX_UNROLL):
        raise fail(program, f"cg's iters must be an integer from 1 to {MAX_UNROLL}", value.span,
                   "write solve = cg(iters = 10)")
    return int(value.text)


def system_requirements(program: Program, directive: Directive, system: OperatorSystem, what: str) -> Program:
    """c_i >= 0 of every A_i.T A_i term and c0 >= 0: a number of the wrong sign is an error here, a symbol a
    requirement checked at construction. (A dense H is the caller's to check.)"""
    for c, op in ((system.eye, None),) + tuple(system.grams):
        label = f"the coefficient of {math(op)}.T {math(op)}" if op is not None else "the coefficient of eye"
        if c.is_number:
            if c < 0:
                raise fail(program, f"derive {directive.name}: {label} in {what} is {math(c)} < 0, so the system "
                           "may have no solution", directive.span)
            continue
        program = program.requiring(c, "nonnegative", f"{label} in {what}; it keeps the system positive "
                                    "semidefinite", directive.span)
    return program


def operator_solve(program: Program, directive: Directive, system: OperatorSystem, rhs, key: str = "solve"):
    """(program, x with system x = rhs, how): circsolve for a circulant system (unless solve = cg(...) is
    written), else OperatorCG from the var's previous value."""
    from dpc.passes.derive import METHODS
    asked = None
    if key in {o.name for o in METHODS[directive.name].options} and directive.kwarg(key) is not None:
        asked = solve_option(program, directive, key)
    var = system.var
    other = system.not_circulant() if system.dense is None else None
    circulant = system.dense is None and other is None and system.grams
    if asked == FFT and not circulant:
        node = directive.kwarg(key)
        if other is not None:
            why = f"{math(other)} is not a circular convolution"
            if isinstance(other, atoms.Conv):
                hint = (f"write pad = circular in {math(other).split(', pad')[0]}) for the FFT solve, or "
                        f"solve = cg(iters = {DEFAULT_CG_ITERS})")
            else:
                hint = f"write solve = cg(iters = {DEFAULT_CG_ITERS})"
        else:
            why = "it has no circular convolution" if not system.grams else "it has a dense matrix"
            hint = f"write solve = cg(iters = {DEFAULT_CG_ITERS})"
        raise fail(program, f"derive {directive.name}: solve = fft needs a circulant {var.name}-step system "
                   f"(every operator a circular convolution), but {why}", node.span, hint)
    if circulant and not isinstance(asked, int):
        terms = []
        for c, op in system.grams:
            terms += [op.args[0], c]
        value = atoms.CirculantSolve(rhs, system.eye, *terms)
        how = (f"({system.text()}) {var.name} = rhs is circulant (every operator a circular convolution): solved "
               "exactly by the FFT (rfft2, a division by the symbol, irfft2)")
        if system.eye == 0:
            how += "; where the symbol is 0 the solve takes 0 (the least-norm solution)"
        return program, value, how
    iters = asked if isinstance(asked, int) else DEFAULT_CG_ITERS
    placeholder = make_symbol(f"_cg_{var.name}", program.decl(var.name).shape)
    value = atoms.OperatorCG(system.apply(placeholder), placeholder, rhs, var, sp.Integer(iters))
    why = ("solve = cg(...) written" if isinstance(asked, int) else
           f"{math(other)} is not a circular convolution" if other is not None else "not circulant")
    how = (f"({system.text()}) {var.name} = rhs by {iters} conjugate-gradient steps from the previous {var.name}, "
           f"matrix-free ({why}" + ("" if isinstance(asked, int) else
                                     f"; the default is {DEFAULT_CG_ITERS} steps, solve = cg(iters = k) sets k") + ")")
    return program, value, how
