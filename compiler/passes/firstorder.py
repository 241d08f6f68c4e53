"""The pieces every derive method builds its update from (not a pass itself):

  Iteration             one layer's update under construction: new states, each with its start and note,
                        temps (`let` lines of the step), assignments; done() is the program with that step
  positive_scalar       the reader of a scalar option (a step, a penalty, a momentum): lowered, and a
                        number must be finite and > 0
  STEP                  the `step` option; split() reads it, 1/L by default (passes/splitting.py)
  gradient_step         at - step * grad f(at)
  prox_gradient         prox_{step g}(gradient_step(at) + plus): forward-backward, plus a momentum term
  momentum, extrapolate coeff * (point - previous), and point plus it
  step_condition        what a given step must satisfy against L, the Lipschitz constant of grad f

A method declares itself with passes/derive.py's derive_method.
"""
from __future__ import annotations

from dataclasses import replace

import sympy as sp

from dpc import atoms
from dpc.errors import DpcError
from dpc.ir import Decl, Directive, Program, Step, dim_symbol, make_symbol
from dpc.lower import lower_scalar
from dpc.passes.derive import Option
from dpc.passes.splitting import Splitting, fail
from dpc.printing import format_step, math

_SAME = object()


class Iteration:
    """The step a derive method builds for `var`, with the declarations it needs. States are declared at
    once (their names taken); temps are declared last, after any let the method adds meanwhile."""

    def __init__(self, program: Program, directive: Directive, var):
        self.program, self.directive, self.var = program, directive, var
        self.lets: list = []
        self.assigns: list = []
        self._temps: list[str] = []

    def state(self, base: str, note: str, start=_SAME, shape=_SAME):
        """A new var (another state of the network), starting at `start`: the var's own start by default,
        0 a zero vector of the shape."""
        var = self.program.decl(self.var.name)
        shape = var.shape if shape is _SAME else shape
        start = var.value if start is _SAME else start
        if isinstance(start, int) and start == 0 and shape:
            start = sp.ZeroMatrix(*make_symbol("_zero", shape).shape)  # R[c, h, w]: (c*h) x w
        name = self.program.fresh_name(base)
        self.program = self.program.with_decl(Decl(name, "var", shape, start, self.directive.span, note=note))
        return make_symbol(name, shape) if shape else sp.Symbol(name, real=True)

    def temp(self, base: str, value, shape=_SAME):
        """`let base = value` inside the step, read by the lines after it; returns its symbol."""
        shape = self.program.decl(self.var.name).shape if shape is _SAME else shape
        name = self.program.fresh_name(base)
        self.program = self.program.with_decl(Decl(name, "temp", shape, None, self.directive.span))
        self._temps.append(name)
        self.lets.append((name, value))
        return make_symbol(name, shape) if shape else sp.Symbol(name, real=True)

    def assign(self, target, value) -> None:
        """target <- value, in order: each assignment reads the states as the layer started."""
        self.assigns.append((getattr(target, "name", target), value))

    def done(self, *notes: str) -> Program:
        """The program with this step, noted: the method's notes, then the step itself."""
        decls = self.program.decls
        decls = tuple(d for d in decls if d.name not in self._temps) + tuple(d for d in decls if d.name in self._temps)
        step = Step(lets=tuple(self.lets), assigns=tuple(self.assigns))
        return replace(self.program, decls=decls, step=step).noted(
            self.directive.label(), *notes, *format_step(step, ""))


def positive_scalar(program: Program, directive: Directive, key: str):
    """A derive option lowered as a scalar; a number must be finite and > 0 (steps, penalties, momenta)."""
    node = directive.kwarg(key)
    value = lower_scalar(program, node, f"derive {directive.name}'s {key}")
    if value.is_number and not (value.is_positive and value.is_finite):
        raise fail(program, f"derive {directive.name}'s {key} must be finite and > 0, got {math(value)}", node.span)
    return value


def scalar_option(program: Program, directive: Directive, key: str, default):
    """positive_scalar of the option when it is written, else the default."""
    return default if directive.kwarg(key) is None else positive_scalar(program, directive, key)


STEP = Option("step")  # read by split(): the step as written, or 1/L


def gradient_step(s: Splitting, at=None):
    """at - step * grad f(at); at defaults to the var itself."""
    grad = s.grad if at is None else s.grad.subs(s.var, at)
    return (s.var if at is None else at) - s.step * grad


def prox_gradient(s: Splitting, at=None, plus=None):
    """prox_{step g}(at - step * grad f(at) + plus): the forward-backward step, `plus` a momentum term."""
    point = gradient_step(s, at)
    return s.prox(point if plus is None else point + plus)


def momentum(point, previous, coeff):
    """coeff * (point - previous): heavy-ball's and Nesterov's correction."""
    return coeff * (point - previous)


def extrapolate(point, previous, coeff=sp.Integer(1)):
    """point + coeff * (point - previous): FISTA's y, PDHG's zbar (coeff 1: 2 point - previous)."""
    return point + momentum(point, previous, coeff)


def _option_span(directive: Directive, key: str):
    for k, _, span in directive.kwargs:
        if k == key:
            return span
    return directive.span


def step_condition(s: Splitting, directive: Directive, bound: int) -> Program:
    """s.program with the condition a given step must meet against L, a Lipschitz constant of grad f
    (splitting's bound: quadratics and c*sum(phi(A @ z + b))): step*L <= 1 for `bound` 1 (FISTA's rate);
    for `bound` 2 (proximal gradient, gradient descent) step*L < 2 (an error beyond: the iteration
    diverges) and step*L <= 1 a caution (a warning between 1/L and 2/L). Decided at compile time when
    step*L is a number at the defaults; a requirement (and caution) when it reads a param or a value given
    at construction. No condition without a given step (1/L meets it) or without a known L."""
    from dpc.passes.splitting import _lipschitz_bound
    from dpc.requirements import default_number, with_lets
    program = s.program
    if directive.kwarg("step") is None:
        return program
    try:
        lipschitz = _lipschitz_bound(program, directive, s.var, s.smooth)
    except DpcError:
        return program  # no bound known: nothing to compare the step with
    if lipschitz is None:
        return program  # grad f is constant: any step is a descent step
    lipschitz = lipschitz.replace(lambda e: isinstance(e, atoms.OpNorm) and isinstance(e.args[0], sp.Identity),
                                  lambda e: sp.Integer(1))  # opnorm(eye) = 1
    product = with_lets(program, s.step * lipschitz)
    try:
        product = sp.simplify(product)
    except TypeError:  # sympy's simplify recursing into a matrix inside opnorm(D.T @ D + 2*lam*eye(n))
        pass
    span = _option_span(directive, "step")
    what = f"derive {directive.name}'s step {math(s.step)}"
    names = f"L = {math(lipschitz)} (a Lipschitz constant of grad f)"
    hint = f"write `derive {directive.name}`: without a step dpc takes 1/L"
    value = default_number(program, product)
    if value is not None:
        at = f"step*L = {value:.4g}, {names}" + ("" if product.is_number else " at the defaults")
        if bound == 1 and value > 1 + 1e-12:
            raise fail(program, f"{what} is above 1/L: {at}; derive {directive.name} needs step <= 1/L", span, hint)
        if bound == 2 and value >= 2 - 1e-12:
            raise fail(program, f"{what} is at least 2/L: {at}; derive {directive.name} diverges from there "
                       "(it needs step < 2/L, and step <= 1/L to decrease the objective at every step)", span, hint)
        if bound == 2 and value > 1 + 1e-12:
            program = program.warned(f"{what} is above 1/L: {at}; derive {directive.name} converges for steps "
                                     "below 2/L, but decreases the objective at every step only up to 1/L",
                                     span, hint)
    if product.is_number:
        return program
    if bound == 1:
        return program.requiring(1 - product, "nonnegative", f"{what} must be at most 1/L, {names}", span)
    return program.requiring(2 - product, "positive", f"{what} must be below 2/L, {names}", span).cautioning(
        1 - product, "nonnegative", f"{what} should be at most 1/L, {names}", span)
