"""What every first-order derivation needs: the var, the step, f = smooth part, g = prox part.

Shared by derive proxgrad, fista and gd (not a pass itself).
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from sympy import MatrixSymbol

from dpc import algebra, atoms, calculus, declare
from dpc.errors import DpcError
from dpc.ir import Decl, Directive, Program
from dpc.lower import lower_scalar
from dpc.passes.prox import PROJECTIONS, NoProx, Penalty, Projection, as_penalty, build_prox, is_nonsmooth
from dpc.printing import format_constraint, math


@dataclass(frozen=True)
class Splitting:
    program: Program      # possibly with a new `let` for the step
    var: MatrixSymbol
    smooth: sp.Basic      # f(z)
    grad: sp.Basic        # grad f(z), tidied
    penalties: tuple[Penalty, ...]
    box: tuple | None
    step: sp.Basic
    prox: object          # v -> prox_{step g}(v)
    prox_text: str


def fail(program: Program, message: str, span, hint: str | None = None) -> DpcError:
    return DpcError(message, span, hint).with_source(program.source)


def the_var(program: Program, directive: Directive) -> MatrixSymbol:
    vars_ = program.states
    if program.objective is None:
        raise fail(program, f"derive {directive.name} needs a `minimize` objective", directive.span,
                   "an `update` program is already an iteration: go on with unroll")
    if len(vars_) != 1:
        raise fail(program, f"derive {directive.name} handles one var, the program has {len(vars_)}",
                   directive.span)
    if len(vars_[0].shape) == 0:
        raise fail(program, f"derive {directive.name} needs a vector or matrix var", vars_[0].span)
    return vars_[0].symbol


def split(program: Program, directive: Directive, *, allow_prox: bool = True) -> Splitting:
    var = the_var(program, directive)
    smooth, penalties = sp.Integer(0), []
    for term in sp.Add.make_args(sp.expand(program.objective, mul=False, multinomial=False, power_base=False)):
        if not term.has(var):
            continue  # constant in the var: does not move the minimiser
        penalty = as_penalty(term, var)
        if penalty is not None and (penalty.kind != "ridge" or allow_prox):
            penalties.append(penalty)
        elif is_nonsmooth(term, var):
            raise _no_prox(program, term, var, directive)
        else:
            smooth = smooth + term
    box = _box(program, directive, var)
    if not allow_prox:
        nonsmooth = [p for p in penalties if p.kind != "ridge"]
        if nonsmooth or box is not None:
            what = math(nonsmooth[0].term) if nonsmooth else "the constraint"
            span = program.span_of_term(nonsmooth[0].term) if nonsmooth else program.constraints[0].span
            raise fail(program, f"derive {directive.name} needs a smooth objective, but {what} is not smooth",
                       span or directive.span,
                       f"write `{directive.label().replace('derive ' + directive.name, 'derive proxgrad', 1)}` in place of "
                       f"`{directive.label()}`")
        smooth = smooth + sum((p.term for p in penalties), sp.Integer(0))
        penalties = []
    try:
        grad = algebra.gradient(smooth, var)
    except algebra.NotDifferentiable as e:
        raise fail(program, f"cannot differentiate {math(e.term)} with respect to {var.name}",
                   _span_containing(program, e.term) or directive.span,
                   "smooth terms are sqnorm(...), inner products, sum(...), sum_j, and the smooth entrywise functions "
                   f"{', '.join(smooth_entrywise())} of them") from None
    program, step = _step(program, directive, var, grad, smooth)
    program = _requirements(program, directive, penalties, box, step)
    try:
        prox, text = build_prox(penalties, box, step)
    except NoProx as e:
        raise fail(program, f"no known proximal operator for {math(e.term)}: {e.reason}",
                   program.span_of_term(e.term) or directive.span,
                   "keep one of norm1/norm0 on the var; other terms must be smooth") from None
    return Splitting(program, var, smooth, grad, tuple(penalties), box, step, prox, text)


def smooth_entrywise(bounded: bool = False) -> list[str]:
    """The declared entrywise atoms with a derivative (bounded: and a curvature bound), for hints."""
    return [a.name for a in declare.declared() if issubclass(a.cls, atoms.VectorAtom) and callable(a.derivative)
            and not isinstance(a.derivative, declare.Pullback) and (not bounded or a.curvature is not None)]


def _requirements(program, directive, penalties, box, step):
    """What the prox and the step assume of hypers and lets (checked at construction)."""
    for p in penalties:
        program = program.requiring(p.weight, "nonnegative", f"the weight of {math(p.term)}",
                                    program.span_of_term(p.term) or directive.span)
    if isinstance(box, Projection):
        _, relation, why = PROJECTIONS[box.set]
        program = program.requiring(box.arg, relation, why, program.constraints[0].span)
    if isinstance(box, tuple) and box[0].is_finite is not False and box[1].is_finite is not False:
        program = program.requiring(box[1] - box[0], "nonnegative", "the box's upper bound minus its lower bound",
                                    program.constraints[0].span)
    if isinstance(step, sp.Pow) and step.exp == -1 and isinstance(step.base, sp.Symbol):
        # step = 1/L: L itself is what must be positive (and a check of 1/L would divide by zero first)
        derived = program.has(step.base.name) and program.decl(step.base.name).note == LIPSCHITZ_NOTE
        if not derived:
            program = program.requiring(step.base, "positive", f"the step is 1/{step.base.name}", directive.span)
    else:
        program = program.requiring(step, "positive", "the step", directive.span)
    return program


LIPSCHITZ_NOTE = "Lipschitz constant of grad f"


def _no_prox(program, term, var, directive=None):
    hint = (f"prox-able terms are c*norm1({var.name}), c*norm0({var.name}) and c*sqnorm({var.name}) of the var "
            "itself; smooth terms are sqnorm(...) of affine expressions")
    methods = splitting_methods(program, directive) if directive is not None else []
    if methods:  # g(K z): the splitting methods need no prox of the whole term
        hint = (f"{math(term)} is g(K {var.name}), a norm of a linear map of {var.name}, which ADMM and PDHG split: "
                f"write {' or '.join(f'`{m}`' for m in methods)} in place of `{directive.label()}`")
    return fail(program, f"no known proximal operator for {math(term)}",
                program.span_of_term(term) or _span_containing(program, term), hint)


def splitting_methods(program, directive, names=("pdhg", "admm")) -> list[str]:
    """The directives `derive pdhg` and `derive admm(rho = 1)` (of `names`), each that derives this program
    (f(z) + g(K z) with a quadratic f), for a hint in place of `directive`."""
    from dpc.grammar import ast
    from dpc.passes.derive import METHODS
    found = []
    rho = (("rho", ast.Number(directive.span, "1"), directive.span),)
    for name, kwargs in (("pdhg", ()), ("admm", rho)):
        if name not in METHODS or name == directive.name or name not in names:
            continue
        candidate = Directive("derive", name, kwargs=kwargs, span=directive.span, name_span=directive.name_span)
        try:
            METHODS[name].apply(program, candidate)
        except DpcError:
            continue
        found.append(candidate.label())
    return found


def _span_containing(program, sub):
    for term, span in program.term_spans:
        if term.has(sub) or term == sub:
            return span
    return None


RELAX_HINTS = {"onehot": "relax onehot -> softmax(tau) (or sparsemax), then derive closed",
               "binary": "relax binary -> sigmoid(tau), then derive closed"}


def _box(program, directive, var):
    """The var's feasible set for the prox: a box (lo, hi), "simplex", a Projection (ball, l1ball, sparse),
    or None."""
    box = None
    for c in program.constraints:
        if c.var != var.name:
            continue
        if c.set not in ("box", "simplex") + tuple(PROJECTIONS):
            raise fail(program, f"derive {directive.name} has no projection for `{format_constraint(c)}`", c.span,
                       RELAX_HINTS.get(c.set))
        if c.set not in ("box",) and var.shape[1] != 1:  # the simplex and the balls are sets of vectors
            raise fail(program, f"`{format_constraint(c)}` is a set of vectors, but {var.name} is a matrix", c.span,
                       f"constrain a matrix entrywise: {var.name} >= 0, {var.name} in box(lo, hi)")
        box = c.args if c.set == "box" else "simplex" if c.set == "simplex" else Projection(c.set, c.args[0])
    return box


def _step(program, directive, var, grad, smooth):
    """The step as written, or 1/L with L a Lipschitz constant of grad f: opnorm of the Hessian of f's
    quadratic terms, plus |c| * curvature(phi) * opnorm(A)^2 for each term c*sum(phi(A @ z + b)) whose
    entrywise phi has a bounded second derivative (each atom declares its bound: its curvature rule)."""
    node = directive.kwarg("step")
    if node is not None:
        return program, lower_scalar(program, node, "the step")
    value = _lipschitz_bound(program, directive, var, smooth)
    if value is None:
        raise fail(program, f"derive {directive.name} needs step = ...", directive.span)
    name = program.fresh_name("L")
    program = program.with_decl(Decl(name, "let", (), value, directive.span, note=LIPSCHITZ_NOTE)).requiring(
        sp.Symbol(name, real=True), "positive", f"{name} is the Lipschitz constant of grad f; the step is 1/{name}",
        directive.span).noted(
        directive.label(), f"no step given: step = 1/{name}, {name} = {math(value)} (Lipschitz constant of grad f)")
    return program, 1 / sp.Symbol(name, real=True)


def _lipschitz_bound(program, directive, var, smooth):
    """L for the smooth part (None if grad f is constant); an error at the first term with no known bound."""
    quadratic, bounds = [], []
    for term in sp.Add.make_args(smooth):
        if not term.has(var):
            continue
        if not algebra.nonlinear_in(algebra.gradient(term, var), var):
            quadratic.append(term)
            continue
        bound = _curvature_bound(term, var)
        if bound is None:
            bound = _operator_quadratic_bound(term, var)  # c*sqnorm(OP(z) - b): its gradient reads OP's adjoint
        if bound is None:
            raise fail(program, f"derive {directive.name} needs step = ... here: dpc knows no Lipschitz constant for "
                       f"the gradient of {math(term)}", program.span_of_term(term)
                       or _span_containing(program, term) or directive.span,
                       f"give the step, e.g. derive {directive.name}(step = 0.1); bounds are known for quadratics "
                       f"and c*sum(phi(A @ z + b)), phi one of {', '.join(smooth_entrywise(bounded=True))}")
        bounds.append(bound)
    operator_terms = [(t, _operator_quadratic_bound(t, var)) for t in quadratic]
    if any(b is not None for _, b in operator_terms):  # c*sqnorm(OP(z) + b): 2|c| opnorm(OP)^2 each
        bounds += [b for _, b in operator_terms if b is not None]
        quadratic = [t for t, b in operator_terms if b is None]
    if quadratic:
        grad = algebra.gradient(sp.Add(*quadratic), var)
        try:
            coeffs, _ = algebra.affine_parts(grad, [var])
        except algebra.NotAffine:
            bounds.insert(0, _sided_lipschitz(program, directive, grad, var))
        else:
            hessian = coeffs.get(var)
            if hessian is not None:
                bounds.insert(0, _lipschitz(hessian))
    return sp.Add(*bounds) if bounds else None


def _curvature_bound(term, var):
    """c*sum(phi(A @ z + b)) -> |c| * sup|phi''| * opnorm(A)^2 (the Hessian is c A.T diag(phi'') A); else None."""
    found = [a for a in term.atoms(atoms.ScalarAtom) if a.has(var)]
    if len(found) != 1 or not isinstance(found[0], atoms.SumAll):
        return None
    weight, rest = term.as_independent(found[0], as_Add=False)
    inner = found[0].args[0]
    kappa = calculus.curvature(type(inner))
    if rest != found[0] or weight.has(var) or kappa is None or any(p.has(var) for p in inner.args[1:]):
        return None
    try:
        coeffs, _ = algebra.affine_parts(inner.args[0], [var])
    except algebra.NotAffine:
        norm = _operator_norm(inner.args[0], var)  # phi(c*conv(K, z) + b): the operator's declared opnorm
        return None if norm is None else abs(weight) * kappa * norm ** 2
    matrix = coeffs.get(var)
    if matrix is None:
        return None
    scale = abs(weight) * kappa
    if isinstance(matrix, sp.Identity):
        return scale
    c, mats = matrix.as_coeff_matrices() if isinstance(matrix, sp.MatMul) else (sp.Integer(1), [matrix])
    norm = atoms.OpNorm(sp.MatMul(*mats) if len(mats) > 1 else mats[0])
    return scale * c ** 2 * norm ** 2


def _operator_norm(arg, var):
    """A bound on ||d arg / d var|| when arg = c*OP(var) + b with OP a declared linear operator (diff, grad2d,
    conv: its `linear=` opnorm, the sup over image sizes) and c, b free of var; else None."""
    terms = [t for t in sp.Add.make_args(arg) if t.has(var)] if isinstance(arg, (sp.Add, sp.MatAdd)) else [arg]
    if len(terms) != 1:
        return None
    term = terms[0]
    c = sp.Integer(1)
    if isinstance(term, sp.MatMul):  # (1/b)*conv(K, z): a scalar coefficient and one operator
        c, mats = term.as_coeff_matrices()
        if len(mats) != 1 or c.has(var):
            return None
        term = mats[0]
    found = declare.of(term)
    if found is None or found.linear is None or term.args[found.linear.operand] != var:
        return None
    if any(a.has(var) for i, a in enumerate(term.args) if i != found.linear.operand):
        return None
    return abs(c) * found.linear.opnorm(term)


def _operator_quadratic_bound(term, var):
    """c*sqnorm(OP(var) + b) (c free of var): its gradient's Lipschitz constant 2|c| opnorm(OP)^2; else None."""
    found = [a for a in term.atoms(atoms.ScalarAtom) if a.has(var)]
    if len(found) != 1 or not isinstance(found[0], atoms.SqNorm):
        return None
    weight, rest = term.as_independent(found[0], as_Add=False)
    if rest != found[0] or weight.has(var):
        return None
    norm = _operator_norm(found[0].args[0], var)
    return None if norm is None else 2 * abs(weight) * norm ** 2


def _sided_lipschitz(program, directive, grad, var):
    """grad f = sum_i c_i L_i @ var @ R_i + b (a matrix var multiplied on both sides, e.g. A @ S @ B): the map
    S -> L S R has operator norm opnorm(L) * opnorm(R), so sum_i |c_i| opnorm(L_i) opnorm(R_i) bounds L."""
    try:
        sided, _ = algebra.sided_parts(grad, var)
    except algebra.NotAffine:
        raise fail(program, f"derive {directive.name} needs step = ... here (the gradient is not affine)",
                   directive.span) from None
    return sp.Add(*[abs(c) * (_lipschitz(left) if left is not None else 1) *
                    (_lipschitz(right) if right is not None else 1) for c, left, right in sided])


def _lipschitz(hessian):
    """opnorm(A.T @ A) = opnorm(A)^2: keep the cheaper form when the Hessian is a Gram matrix; opnorm(c*eye(n)) =
    |c| (no eye(h) built for an image var, whose h is read at every call)."""
    if isinstance(hessian, sp.Identity):
        return sp.Integer(1)
    if isinstance(hessian, sp.MatMul):
        c, mats = hessian.as_coeff_matrices()
        if len(mats) == 1 and isinstance(mats[0], sp.Identity):
            return abs(c)
    if isinstance(hessian, sp.MatMul):
        c, mats = hessian.as_coeff_matrices()
        if len(mats) == 2 and mats[0] == mats[1].T:  # A.T @ A (a left factor) or B @ B.T (a right one)
            return abs(c) * atoms.OpNorm(mats[0] if isinstance(mats[1], sp.Transpose) else mats[1]) ** 2
    return atoms.OpNorm(hessian)


def hessian_terms(program: Program, hessian) -> list[tuple[sp.Basic, str | None, sp.Basic]]:
    """A quadratic's Hessian, term by term, as (term, kind, coefficient): kind "eye" for c*eye with c > 0,
    "gram" for c*A.T@A with c >= 0 (the signs read at the hypers' defaults and the lets' definitions), None
    for anything else. A sum of eye and gram terms is positive semidefinite, and definite with an eye term in
    it. The signs hold at the defaults only: `hessian_requirements` makes them requirements, checked for
    every way a value arrives (a default, a value given at construction, a learned one)."""
    from dpc.requirements import default_value
    out = []
    for term in algebra.terms_of(hessian):
        coeff, mats = term.as_coeff_matrices() if isinstance(term, sp.MatMul) else (sp.Integer(1), [term])
        sign = default_value(program, coeff)
        sign = coeff if sign is None else sign
        if len(mats) == 1 and isinstance(mats[0], sp.Identity) and sign.is_positive:
            kind = "eye"
        elif len(mats) == 2 and mats[0] == mats[1].T and sign.is_nonnegative:
            kind = "gram"
        else:
            kind = None
        out.append((term, kind, coeff))
    return out


def hessian_requirements(program: Program, hessian, span, what: str) -> Program:
    """The signs `hessian_terms` read at the defaults, as requirements: c > 0 of each c*eye term, c >= 0 of
    each c*A.T@A term (`what` says what they make of the Hessian)."""
    for term, kind, coeff in hessian_terms(program, hessian) if hessian is not None else ():
        if kind is None or coeff.is_number:
            continue
        program = program.requiring(coeff, "positive" if kind == "eye" else "nonnegative",
                                    f"the coefficient of {math(term)} in the Hessian; {what}", span)
    return program


def describe(s: Splitting) -> list[str]:
    g_terms = [math(p.term) for p in s.penalties]
    if s.box == "simplex":
        g_terms.append(f"[{s.var.name} in simplex]")
    elif isinstance(s.box, Projection):
        g_terms.append(f"[{s.var.name} in {s.box.set}({math(s.box.arg)})]")
    elif s.box is not None:
        from dpc.ir import Constraint
        g_terms.append(f"[{format_constraint(Constraint(s.var.name, 'box', s.box))}]")
    return [f"f({s.var.name}) = {math(s.smooth)}    (smooth)",
            f"g({s.var.name}) = {' + '.join(g_terms) or '0'}    (prox: {s.prox_text})",
            f"grad f({s.var.name}) = {math(s.grad)}",
            f"step = {math(s.step)}"]
