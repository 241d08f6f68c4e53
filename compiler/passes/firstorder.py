"""The pieces every derive method builds its update from (not a pass itself):

  Iteration             one layer's update under construction: new states, each with its start and note,
                        temps (`let` lines of the step), assignments; done() is the program with that step
  positive_scalar       the reader of a scalar option (a step, a penalty, a momentum): lowered, and a
                        number must be finite and > 0
  STEP                  the `step` option; split() reads it, 1/L by default (passes/splitting.py)
  gradient_step         at - step * grad f(at)
  prox_gradient         prox_{step g}(gradient_step(at) + plus): forward-backward, plus a momentum term
  momentum, extrapolate coeff * (point - previous), and point plus it

A method declares itself with passes/derive.py's derive_method.
"""
from __future__ import annotations

from dataclasses import replace

import sympy as sp

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
            start = sp.ZeroMatrix(dim_symbol(shape[0]), 1)
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
