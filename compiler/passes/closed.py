"""derive closed: the minimiser in closed form, when one is known; one layer, no iterations.

The forms, found from the objective's terms and the var's constraint (not from names):

  <s, c> - tau*entropy(s),      s in simplex    ->  s = softmax(-c/tau)
  <s, c> + (tau/2)*sqnorm(s),   s in simplex    ->  s = sparsemax(-c/tau)
  <s, c> - tau*bentropy(s),     s in box(0, 1)  ->  s = sigmoid(-c/tau)
  a strictly convex quadratic,  no constraint   ->  z = solve(H, -g)  for grad = H z + g

(relaxations.py derives the first three.) The linear cost c comes from `sum_j s[j] * body`
(c[j] = body), `s @ v` and `sum(s)`. Sympy expands c (indexsum.py); softmax and sparsemax
are shift invariant (softmax(v + a*ones) = softmax(v)), so terms constant in j are dropped.
What remains of -c/tau is matched as an affine map W @ u + b of the inputs' features u
(x, or normalize(x)); W and b become lets, so `learn C` recomputes them from C in forward and
`learn weights` frees them (learn_closed_weights).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import sympy as sp
from sympy import MatMul, OneMatrix

from dpc import algebra, atoms
from dpc.errors import DpcError
from dpc.indexsum import VectorForm, vector_form
from dpc.ir import Decl, Directive, Program, make_symbol
from dpc.passes.derive import derive_method
from dpc.passes.prox import is_nonsmooth
from dpc.passes.splitting import hessian_requirements, hessian_terms, the_var
from dpc.printing import format_constraint, math

LAYER_NOTE = "layer of derive closed"


@dataclass(frozen=True)
class Form:
    """One closed form: the regulariser atom, the set it needs, the map, whether it is shift invariant."""

    regulariser: type
    scale: int                 # tau = scale * (coefficient of the regulariser)
    set: str
    args: tuple
    build: type
    shift_invariant: bool
    name: str


FORMS = (
    Form(atoms.Entropy, -1, "simplex", (), atoms.Softmax, True, "softmax"),
    Form(atoms.SqNorm, 2, "simplex", (), atoms.Sparsemax, True, "sparsemax"),
    Form(atoms.BinaryEntropy, -1, "box", (sp.Integer(0), sp.Integer(1)), atoms.Sigmoid, False, "sigmoid"),
)


def _fail(program: Program, message: str, span, hint: str | None = None) -> DpcError:
    return DpcError(message, span, hint).with_source(program.source)


def _span(program: Program, term, directive):
    for t, s in program.term_spans:
        if t == term or t.has(term) or term.has(t):
            return s
    return directive.span


NO_CLOSED_HINT = ("to iterate instead, write `derive proxgrad` and, on the next line, `unroll 16` in place of "
                  "`derive closed`")


@dataclass(frozen=True)
class Cost:
    """One piece of the linear cost c of <s, c>: c[index] = value (a sum), or the vector value itself."""

    index: sp.Symbol | None
    value: sp.Basic
    text: str


@derive_method("closed")
def derive_closed(program: Program, directive: Directive) -> Program:
    var = the_var(program, directive)
    constraints = [c for c in program.constraints if c.var == var.name]
    for c in constraints:
        if c.set in ("onehot", "binary"):
            raise _fail(program, f"derive closed: `{format_constraint(c)}` has no differentiable closed form "
                        "(its minimiser is a hard argmin)", c.span,
                        f"relax it first: relax {c.set} -> {'softmax(0.1)' if c.set == 'onehot' else 'sigmoid(0.1)'}")
    if not constraints:
        return _quadratic(program, directive, var)
    if len(constraints) > 1:
        raise _fail(program, f"derive closed handles one constraint on {var.name}", constraints[1].span)
    return _relaxed(program, directive, var, constraints[0])


# --- linear cost + regulariser over a set ---------------------------------------------

def _relaxed(program, directive, var, constraint):
    cost, regulariser, dropped = [], None, []
    for term in sp.Add.make_args(sp.expand(program.objective, mul=False, multinomial=False, power_base=False)):
        if not term.has(var):
            dropped.append(term)
            continue
        reg = _regulariser(term, var)
        if reg is not None and regulariser is None:
            regulariser = reg
            continue
        linear = _linear_cost(term, var)
        if linear is None:
            raise _fail(program, f"derive closed: no closed-form minimiser is known with the term {math(term)} "
                        f"(not linear in {var.name})", _span(program, term, directive), NO_CLOSED_HINT)
        cost.append(linear)
    form = _form(program, directive, var, constraint, regulariser)
    if not cost:
        raise _fail(program, f"derive closed: the objective has no cost linear in {var.name}, so its minimiser "
                    "does not depend on the inputs", directive.span)
    tau = form.scale * regulariser[1]
    vec = VectorForm(var.shape[0])
    lines = [f"minimize {math(program.objective)} over {format_constraint(constraint)}"]
    cost_text = []
    for piece in cost:
        _accumulate(vec, piece)
        cost_text.append(piece.text)
    tau_text = math(tau) if tau.is_Symbol or tau.is_Number else f"({math(tau)})"
    lines.append(f"closed form: {var.name} = {form.name}(-c/{tau_text}), c = {' + '.join(cost_text)}")
    if dropped:
        lines.append(f"constant in {var.name}, dropped: {', '.join(math(t) for t in dropped)}")
    indices = [piece.index for piece in cost if piece.index is not None]
    if indices and vec.expanded:
        lines.append(f"expanded: c[{indices[0]}] = {math(sp.Add(*vec.expanded))}")
    if vec.constants and form.shift_invariant:
        reasons = [r or math(c) for c, r in vec.constants]
        lines.append(f"constant in {indices[0] if indices else 'the entries'}, dropped "
                     f"({form.name}(v + a) = {form.name}(v)): "
                     + ", ".join(reasons))
        c_vec = vec.vector if vec.vector is not None else sp.ZeroMatrix(*var.shape)
    else:
        c_vec = vec.full()
    if vec.per_index:
        lines.append("not affine, computed per index: " + ", ".join(math(t) for t in vec.per_index))
    argument = sp.expand(-c_vec * (1 / tau))
    program, layer, layer_lines = _affine(program, directive, argument)
    value = form.build(layer)
    lines += [f"-c/{tau_text} = {math(argument)}", *layer_lines, f"{var.name} = {math(value)}"]
    return replace(program, closed_form=((var.name, value),)).noted(directive.label(), *lines)


def _regulariser(term, var):
    """coef * R(var) for a regulariser atom R of FORMS -> (R's class, coef)."""
    for form in FORMS:
        found = [a for a in term.atoms(form.regulariser) if a.has(var)]
        if len(found) == 1 and found[0].args[0] == var:
            coef, rest = term.as_independent(found[0], as_Add=False)
            if rest == found[0] and not coef.has(var):
                return form.regulariser, coef
    return None


def _linear_cost(term, var):
    """A term linear in var -> its Cost; None otherwise."""
    coef, rest = term.as_independent(var, as_Add=False)
    if isinstance(rest, atoms.IndexSum):
        body, j, dim = rest.args
        if dim != var.shape[0]:
            return None
        entry = atoms.Entry(var, j)
        per_j = sp.expand_mul(body)
        inner = sp.Integer(0)
        for t in sp.Add.make_args(per_j):
            c, r = t.as_independent(entry, as_Add=False)
            if r != entry or c.has(var):
                return None
            inner = inner + c
        inner = coef * inner
        return Cost(j, inner, f"[{math(inner)}]_{j}")
    if isinstance(rest, atoms.Dot):
        a, b = rest.args
        other = b if a == var else a if b == var else None
        if other is None or other.has(var):
            return None
        return Cost(None, coef * other, math(coef * other))
    if isinstance(rest, atoms.SumAll) and rest.args[0] == var:
        ones = coef * atoms.Ones(var.shape[0])
        return Cost(None, ones, f"{math(coef)}*ones")
    return None


def _accumulate(vec: VectorForm, piece: Cost):
    value = piece.value
    if piece.index is not None:
        part = vector_form(value, piece.index, vec.dim)
        if part.vector is not None:
            vec.add_vector(part.vector)
        vec.constants += part.constants
        vec.expanded += part.expanded
        vec.per_index += part.per_index
    elif isinstance(value, MatMul) and any(isinstance(m, (OneMatrix, atoms.Ones)) for m in value.args):
        vec.constants.append((value.as_coeff_matrices()[0], ""))
    else:
        vec.add_vector(value)


def _form(program, directive, var, constraint, regulariser) -> Form:
    if regulariser is None:
        raise _fail(program, f"derive closed: a linear cost over `{format_constraint(constraint)}` is minimised "
                    "at a vertex (a hard argmin), which has no differentiable closed form", constraint.span,
                    "relax a onehot constraint with entropy: relax onehot -> softmax(0.1)")
    for form in FORMS:
        if form.regulariser is regulariser[0] and constraint.set == form.set and constraint.args == form.args:
            return form
    raise _fail(program, f"derive closed: no closed form is known for {math(regulariser[1])}*"
                f"{regulariser[0].dp_name if hasattr(regulariser[0], 'dp_name') else 'sqnorm'}({var.name}) "
                f"over `{format_constraint(constraint)}`", constraint.span, NO_CLOSED_HINT)


def _features(argument, inputs):
    """The input-dependent vectors the argument applies matrices to: x in C @ x, normalize(x) in W @ normalize(x)."""
    found = []
    for term in algebra.terms_of(argument):
        if not _uses(term, inputs):
            continue
        mats = term.as_coeff_matrices()[1] if isinstance(term, MatMul) else [term]
        last = mats[-1]
        if any(_uses(m, inputs) for m in mats[:-1]) or not _uses(last, inputs):
            return None
        if last not in found:
            found.append(last)
    return found


def _uses(expr, names) -> bool:
    return any(getattr(s, "name", None) in names for s in expr.free_symbols)


def _affine(program, directive, argument):
    """argument = W @ u + b in the inputs' features u -> lets W, b and the layer W @ u + b."""
    inputs = {d.name for d in program.of_kind("input")}
    features = _features(argument, inputs)
    if not features:
        return program, argument, []
    try:
        coeffs, bias = algebra.affine_parts(argument, features)
    except algebra.NotAffine:
        return program, argument, []
    rows = str(argument.shape[0])
    terms, lines = [], []
    for u in features:
        name = program.fresh_name("W" if len(features) == 1 else f"W_{len(terms) + 1}")
        shape = (rows, str(u.shape[0]))
        program = program.with_decl(Decl(name, "let", shape, coeffs[u], directive.span, note=LAYER_NOTE))
        terms.append(make_symbol(name, shape) * u)
        lines.append(f"weight {name} = {math(coeffs[u])}")
    if bias is not None and not algebra.is_zero(bias):
        bias = bias.replace(lambda e: isinstance(e, OneMatrix), lambda e: atoms.Ones(*e.shape))
        name = program.fresh_name("b")
        program = program.with_decl(Decl(name, "let", (rows,), bias, directive.span, note=LAYER_NOTE))
        terms.append(make_symbol(name, (rows,)))
        lines.append(f"bias {name} = {math(bias)}")
    else:
        lines.append("no bias")
    layer = sp.MatAdd(*terms) if len(terms) > 1 else terms[0]
    return program, layer, [f"affine map: {math(layer)}", *lines]


# --- unconstrained quadratic ------------------------------------------------------------

def _quadratic(program, directive, var):
    smooth = sp.Integer(0)
    for term in sp.Add.make_args(sp.expand(program.objective, mul=False, multinomial=False, power_base=False)):
        if not term.has(var):
            continue
        if is_nonsmooth(term, var) or term.has(atoms.IndexSum):
            raise _fail(program, f"derive closed: no closed-form minimiser is known with the term {math(term)}",
                        _span(program, term, directive), NO_CLOSED_HINT)
        smooth = smooth + term
    try:
        grad = algebra.gradient(smooth, var)
        coeffs, bias = algebra.affine_parts(grad, [var])
    except (algebra.NotDifferentiable, algebra.NotAffine) as e:
        raise _fail(program, f"derive closed: no closed-form minimiser is known with {math(e.term)} "
                    f"(the objective is not quadratic in {var.name})", _span(program, e.term, directive),
                    NO_CLOSED_HINT) from None
    hessian = coeffs.get(var)
    if hessian is None:
        raise _fail(program, f"derive closed: the objective is linear in {var.name}, so it has no minimiser",
                    directive.span)
    assumptions = _strictly_convex(program, directive, hessian)
    program = hessian_requirements(program, hessian, directive.span, "it makes the Hessian positive definite")
    rhs = algebra.factor_left(-bias) if bias is not None else None
    if rhs is None or algebra.is_zero(rhs):
        raise _fail(program, f"derive closed: the minimiser is {var.name} = 0 whatever the inputs", directive.span)
    name = program.fresh_name("H")
    n = str(var.shape[0])
    program = program.with_decl(Decl(name, "let", (n, n), hessian, directive.span, note="Hessian", spd=True))
    value = atoms.Solve(make_symbol(name, (n, n)), rhs)
    return replace(program, closed_form=((var.name, value),)).noted(
        directive.label(), f"grad f({var.name}) = {math(grad)}",
        f"grad f({var.name}) = 0  <=>  {name} @ {var.name} = {math(rhs)},  {name} = {math(hessian)}",
        f"{name} is positive definite ({assumptions}): one linear solve, no explicit inverse",
        f"{var.name} = {math(value)}")


def _var_name(program) -> str:
    return program.states[0].name


def _strictly_convex(program, directive, hessian) -> str:
    """H = sum of c*A.T@A (c >= 0) and c*eye (c > 0), with at least one eye: positive definite."""
    defaults = {d.symbol: d.value for d in program.of_kind("hyper")}
    strict, reasons = False, []
    for term, kind, coeff in hessian_terms(program, hessian):
        used = [str(s) for s in coeff.free_symbols if s in defaults]
        if kind == "eye":
            strict = True
            at = ", ".join(f"{u} = {math(defaults[sp.Symbol(u, real=True)])}" for u in sorted(used))
            reasons.append(f"{math(coeff)} > 0" + (f", true at the default {at}: keep it positive" if used else ""))
        elif kind is None:
            raise _fail(program, f"derive closed: cannot show the quadratic is strictly convex "
                        f"(Hessian term {math(term)})", directive.span,
                        f"add a ridge term to the objective: + 0.5*sqnorm({_var_name(program)}) "
                        "(any c*sqnorm of the var, c > 0, makes it so)")
    if not strict:
        raise _fail(program, f"derive closed: the Hessian {math(hessian)} may be singular, so the minimiser is "
                    "not unique", directive.span, f"add a ridge term to the objective: + 0.5*sqnorm({_var_name(program)})")
    return ", ".join(reasons)


# --- learn weights on a closed form ---------------------------------------------------

def learn_closed_weights(program: Program, directive: Directive) -> Program:
    """`learn weights` after `derive closed`: the layer's weight and bias lets become parameters,
    initialised to their values (2*C/tau and -rowsqnorm(C)/tau for k-means)."""
    layer = [d for d in program.decls if d.kind == "let" and d.note == LAYER_NOTE]
    if not layer:
        params = ", ".join(d.name for d in program.of_kind("param"))
        raise _fail(program, "learn weights: the closed form has no affine layer to free", directive.span,
                    f"learn the params by name instead: write `learn {params}` in place of `{directive.label()}`"
                    if params else None)
    lines = []
    for d in layer:
        program = program.with_decl(replace(d, kind="weight", trainable=True, per_layer=False))
        lines.append(f"{d.name} = {math(d.value)}    # learned, initialised to its value")
    return program.noted(directive.label(), *lines)

