"""derive proxgrad / fista on an objective in several vars (issue 19 item 2): one joint gradient step, each
var's own prox.

    f(z1, ..., zk) + g1(z1) + ... + gk(zk)      (every non-smooth term reads one var: g is separable)
    zi <- prox_{s gi}(zi - s * grad_i f(z1, ..., zk))     for every i at once (each reads the layer's start)

The step s is 1/L with L a Lipschitz constant of the joint gradient: f's Hessian is the block operator
H = [H_ij], H_ij the coefficient of zj in grad_i f (f quadratic), and

    ||H|| <= max_i sum_j ||H_ij||

(the spectral norm of a block operator is at most that of the matrix of its block norms [||H_ij||], which for
a nonnegative symmetric matrix is at most its largest row sum). For robust PCA, f = 0.5 ||X - L - S||_F^2:
every block is the identity and L = 2, the exact ||H||. A non-smooth term in two vars (norm1(L + S)) has no
separable prox: an error naming the coupling term. `derive fista` adds a momentum point per var and one t.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from dpc import algebra
from dpc.ir import Decl, Directive, Program
from dpc.lower import lower_scalar
from dpc.passes.firstorder import Iteration, extrapolate
from dpc.passes.prox import NoProx, as_penalty, build_prox, is_nonsmooth
from dpc.passes.splitting import (LIPSCHITZ_NOTE, _box, _lipschitz, _no_prox, _requirements, _span_containing,
                                  describe, fail, smooth_entrywise, Splitting)
from dpc.printing import math


@dataclass(frozen=True)
class JointSplitting:
    program: Program
    parts: tuple[Splitting, ...]   # one per var: its gradient of the joint f and its own prox
    step: sp.Basic


def joint_split(program: Program, directive: Directive) -> JointSplitting:
    """f and every var's g for an objective in several vars; the step as written, or 1/L (joint bound)."""
    if program.objective is None:
        raise fail(program, f"derive {directive.name} needs a `minimize` objective", directive.span,
                   "an `update` program is already an iteration: go on with unroll")
    decls = program.states
    for d in decls:
        if not d.shape:
            raise fail(program, f"derive {directive.name} needs vector or matrix vars; {d.name} is a scalar", d.span)
    vars_ = [d.symbol for d in decls]
    smooth, penalties = sp.Integer(0), {v: [] for v in vars_}
    for term in sp.Add.make_args(sp.expand(program.objective, mul=False, multinomial=False, power_base=False)):
        used = [v for v in vars_ if term.has(v)]
        if not used:
            continue
        if len(used) == 1:
            penalty = as_penalty(term, used[0])
            if penalty is not None:
                penalties[used[0]].append(penalty)
                continue
        if any(is_nonsmooth(term, v) for v in used):
            if len(used) > 1:
                raise _coupling(program, directive, term, used)
            raise _no_prox(program, term, used[0])
        smooth = smooth + term
    grads = {}
    for v in vars_:
        try:
            grads[v] = algebra.gradient(smooth, v)
        except algebra.NotDifferentiable as e:
            raise fail(program, f"cannot differentiate {math(e.term)} with respect to {v.name}",
                       _span_containing(program, e.term) or directive.span,
                       "smooth terms are sqnorm(...), inner products, sum(...), and the smooth entrywise functions "
                       f"{', '.join(smooth_entrywise())} of them") from None
    program, step = _joint_step(program, directive, vars_, grads)
    parts = []
    for v in vars_:
        box = _box(program, directive, v)
        program = _requirements(program, directive, penalties[v], box, step)
        try:
            prox, text = build_prox(penalties[v], box, step)
        except NoProx as e:
            raise fail(program, f"no known proximal operator for {math(e.term)}: {e.reason}",
                       program.span_of_term(e.term) or directive.span,
                       "keep one of norm1/norm0 on each var; other terms must be smooth") from None
        parts.append(Splitting(program, v, smooth, grads[v], tuple(penalties[v]), box, step, prox, text))
    return JointSplitting(program, tuple(parts), step)


def _coupling(program, directive, term, used):
    names = " and ".join(v.name for v in used)
    return fail(program, f"derive {directive.name} on several vars needs the non-smooth terms separable across "
                f"vars, but {math(term)} couples {names}: its prox is not one prox per var",
                program.span_of_term(term) or _span_containing(program, term) or directive.span,
                f"write each non-smooth term of one var (norm1({used[0].name}) + norm1({used[1].name})), or move the "
                "coupling into a smooth term (sqnorm(...))")


def _joint_step(program, directive, vars_, grads):
    """The step as written, or 1/L with L = max_i sum_j ||H_ij|| (the module docstring), added as a let."""
    node = directive.kwarg("step")
    if node is not None:
        return program, lower_scalar(program, node, "the step")
    rows, blocks = [], []
    for vi in vars_:
        if any(algebra.nonlinear_in(grads[vi], v) for v in vars_):
            raise fail(program, f"derive {directive.name} needs step = ... here: dpc bounds the joint gradient's "
                       f"Lipschitz constant for quadratic objectives only, and grad_{vi.name} f = {math(grads[vi])} "
                       "is not affine", directive.span, f"give the step, e.g. derive {directive.name}(step = 0.1)")
        try:
            coeffs, _ = algebra.affine_parts(grads[vi], vars_)
        except algebra.NotAffine:
            raise fail(program, f"derive {directive.name} needs step = ... here (grad_{vi.name} f = "
                       f"{math(grads[vi])} is not a sum of matrices times the vars)", directive.span,
                       f"give the step, e.g. derive {directive.name}(step = 0.1)") from None
        row = []
        for vj in vars_:
            block = coeffs.get(vj)
            if block is None:
                continue
            norm = _block_norm(block)
            row.append(norm)
            blocks.append(f"||H_{vi.name}{vj.name}|| = {math(norm)}")
        rows.append(sp.Add(*row))
    rows = [r for r in rows if r != 0] or [sp.Integer(0)]  # a var the smooth part does not read: no block
    try:
        value = sp.Max(*rows) if len(rows) > 1 else rows[0]
    except TypeError:  # sympy's Max compares args by factoring into a matrix inside opnorm(...)
        value = sp.Max(*rows, evaluate=False)
    if value == 0:
        raise fail(program, f"derive {directive.name} needs step = ... (the gradient is constant)", directive.span)
    name = program.fresh_name("L")
    names = ", ".join(v.name for v in vars_)
    program = program.with_decl(Decl(name, "let", (), value, directive.span, note=LIPSCHITZ_NOTE)).requiring(
        sp.Symbol(name, real=True), "positive", f"{name} is the Lipschitz constant of grad f; the step is 1/{name}",
        directive.span).noted(
        directive.label(),
        f"joint gradient step on ({names}): one step s for every var, each var then its own prox",
        f"no step given: step = 1/{name}, {name} = {math(value)} (joint Lipschitz constant of grad f)",
        f"  H = [H_ij], H_ij the coefficient of var j in grad_i f: {'; '.join(blocks)}",
        f"  ||H|| <= max_i sum_j ||H_ij|| (the norm of the matrix of block norms, at most its largest row sum)")
    return program, 1 / sp.Symbol(name, real=True)


def _block_norm(block):
    """||H_ij|| of one block: |c| for c * eye, opnorm otherwise (opnorm(A)^2 for a Gram matrix A.T @ A)."""
    c, mats = block.as_coeff_matrices() if isinstance(block, sp.MatMul) else (sp.Integer(1), [block])
    if all(isinstance(m, sp.Identity) for m in mats):
        return abs(c)
    return _lipschitz(block)


def _states(it: Iteration, parts, base: str, note: str):
    """A new state per var, named base + the var's name, starting where the var starts."""
    out = {}
    for part in parts:
        decl = it.program.decl(part.var.name)
        out[part.var] = it.state(f"{base}{part.var.name}", f"{note} of {part.var.name}", start=decl.value,
                                 shape=decl.shape)
    return out


def _step_at(s: JointSplitting, point: dict, it: Iteration):
    """{var: prox_{s g_i}(p_i - s * grad_i f(p))} at the point p (a state per var). Vars whose gradients are
    the same expression (robust PCA: L + S - X for both L and S) read it from one temporary of the step,
    grad_step = s * grad f(p), computed once per layer."""
    swap = {part.var: point[part.var] for part in s.parts}
    steps = {part.var: s.step * part.grad.xreplace(swap) for part in s.parts}
    shared = {}
    for part in s.parts:
        value = steps[part.var]
        if value not in shared and sum(v == value for v in steps.values()) > 1 and len(value.free_symbols) > 1:
            shared[value] = it.temp("grad_step", value, shape=it.program.decl(part.var.name).shape)
    return {part.var: part.prox(point[part.var] - shared.get(steps[part.var], steps[part.var])) for part in s.parts}


def _notes(s: JointSplitting):
    names = ", ".join(p.var.name for p in s.parts)
    notes = [f"f({names}) = {math(s.parts[0].smooth)}    (smooth, joint)"]
    for part in s.parts:
        _, g, grad, _ = describe(part)
        notes += [g, grad]
    return notes + [f"step = {math(s.step)}"]


def derive_proxgrad_joint(program: Program, directive: Directive) -> Program:
    """Proximal gradient on several vars: every var's prox of its own gradient step, all from the same point."""
    s = joint_split(program, directive)
    it = Iteration(s.program, directive, s.parts[0].var)
    for var, value in _step_at(s, {p.var: p.var for p in s.parts}, it).items():
        it.assign(var, value)
    return it.done(*_notes(s))


def derive_fista_joint(program: Program, directive: Directive) -> Program:
    """FISTA on several vars: a momentum point per var (y + the var's name), one momentum sequence t."""
    s = joint_split(program, directive)
    it = Iteration(s.program, directive, s.parts[0].var)
    ys = _states(it, s.parts, "y", "momentum point")
    t = it.state("t", "momentum sequence", start=sp.Integer(1), shape=())
    nexts = {}
    for var, value in _step_at(s, ys, it).items():
        nexts[var] = it.temp(f"{var.name}_next", value, shape=it.program.decl(var.name).shape)
    t_next = it.temp("t_next", (1 + sp.sqrt(1 + 4 * t ** 2)) / 2, shape=())
    for part in s.parts:
        it.assign(ys[part.var], extrapolate(nexts[part.var], part.var, (t - 1) / t_next))
    for part in s.parts:
        it.assign(part.var, nexts[part.var])
    it.assign(t, t_next)
    return it.done(*_notes(s))
