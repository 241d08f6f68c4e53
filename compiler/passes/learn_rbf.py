"""learn influence / learn shrink: learned nonlinearities, weighted sums of Gaussian radial basis functions.

`learn influence(rbfs = 63, range = 310) [tied | untied]` (TNRD, Chen & Pock 2017): in the update, every
operator adjoint applied to an elementwise function of that operator's output, c * convT(K, E(conv(K, u))) (the
gradient of sum(rho(conv(K, u))) is convT(K, rho'(conv(K, u)))), becomes convT(K, rbf(conv(K, u), phi, range)),
and likewise grad2dT(E(grad2d(u))) (one function per direction) and diffT(E(diff(z))) (one function):

    phi(z) = sum_j phi[c, j] exp(-(z - mu_j)^2 / (2 gamma^2)),  mu_j = -range + j gamma,  gamma = 2 range / (rbfs - 1)

one row of weights per filter c (per layer when untied, the default). The scalar factor c (its size; its sign
stays in the update) is folded into E, and each row starts at the least-squares fit of c * E sampled on
rbf_fit_points(rbfs) points of [-range, range] (rbffit: computed in the constructor from its hyper values).

`learn shrink(rbfs = 63, range = 310) [tied | untied]` (Zuo et al. 2016, iteration-wise learned shrinkage):
every soft(x, t) / hard(x, t) of the update becomes x - rbf(x, psi, range), psi fitted to x - soft(x, t)
(x - hard(x, t)): the part of x a threshold takes away, bounded by t, which the RBFs fit well, where the
threshold itself grows like x and no sum of Gaussians follows it. Beyond [-range, range] (past the last centre
by 5 spacings) the learned shrinkage is x itself.

The generated module sums each z's 10 nearest centres (atoms._rbf): within 7.5e-6 max|W| of the full sum.
"""
from __future__ import annotations

import sympy as sp

from dpc import atoms
from dpc.ir import make_symbol
from dpc.grammar import ast
from dpc.passes.thresholds import Tying, fail, inline_temps, map_thresholds, weight, weight_tying, with_learned
from dpc.printing import math

DEFAULTS = {"rbfs": 63, "range": 310}  # TNRD's: 63 centres on [-310, 310], for images in [0, 255]
KIND = {"influence": 0, "shrink": 1}
ATTRIBUTE = {"influence": "influence_fit_error", "shrink": "shrink_fit_error"}


def _num(r: float):
    return sp.Integer(int(r)) if float(r).is_integer() else sp.Float(r)


def _options(program, directive, item) -> tuple[int, float]:
    """rbfs and range from the parentheses after the form's word: integer rbfs >= 2, range > 0, numbers."""
    word, span = item[0]
    index = directive.items.index(item)
    args, kwargs = directive.item_options[index] if index < len(directive.item_options) else ((), ())
    if args:
        raise fail(program, f"learn {word}: its options are named", args[0].span,
                   f"write learn {word}(rbfs = 63, range = 310)")
    values = dict(DEFAULTS)
    for name, expr, kspan in kwargs:
        if name not in DEFAULTS:
            raise fail(program, f"learn {word} has no option '{name}' (its options: rbfs, default "
                       f"{DEFAULTS['rbfs']}; range, default {DEFAULTS['range']})", kspan,
                       f"write learn {word}(rbfs = 63, range = 310)")
        if not isinstance(expr, ast.Number):
            raise fail(program, f"learn {word}: {name} must be a number", expr.span, f"e.g. {name} = {DEFAULTS[name]}")
        value = float(expr.text)
        if name == "rbfs" and (value != int(value) or value < 2):
            raise fail(program, f"learn {word}: rbfs must be an integer of at least 2, got {expr.text}", expr.span,
                       "e.g. rbfs = 63")
        if name == "range" and not 0 < value < float("inf"):
            raise fail(program, f"learn {word}: range must be a positive number, got {expr.text}", expr.span,
                       "e.g. range = 310")
        values[name] = value
    return int(values["rbfs"]), float(values["range"])


def _drop_hint(directive, item) -> str:
    """The learn line without this item: its rewrite, or its deletion when the item is all of it."""
    from dataclasses import replace
    index = directive.items.index(item)
    if len(directive.items) == 1:
        return f"delete the line `{directive.label()}`"
    rest = replace(directive, items=directive.items[:index] + directive.items[index + 1:],
                   item_options=directive.item_options[:index] + directive.item_options[index + 1:])
    return f"write `{rest.label()}` in place of `{directive.label()}`"


def _per_layer_target(program, directive, item, w) -> None:
    """A function that changes with the layer (derive hqs's threshold lam/beta_t) needs one fit per layer."""
    if w.per_layer or not w.value.has(atoms.LAYER):
        return
    from dataclasses import replace
    index = directive.items.index(item)
    words = tuple((("untied", s) if word == "tied" else (word, s)) for word, s in item)
    if words == item:
        words = item + (("untied", item[0][1]),)
    untied = replace(directive, items=directive.items[:index] + (words,) + directive.items[index + 1:])
    raise fail(program, f"{directive.label()}: {w.name} would be one function for every layer, but the function "
               f"it replaces changes with the layer ({math(w.value.args[0])})", item[0][1],
               f"write `{untied.label()}` in place of `{directive.label()}`")


def _fit_error(program, target, r: float, rbfs: int) -> str:
    """The initial fit's largest error on its grid at the hypers' default values, by numpy (as the constructor
    computes it in torch), or why it cannot be said before construction."""
    import numpy as np
    from dpc import reference
    env = {d.name: float(d.value) for d in program.of_kind("hyper") if d.value is not None and d.value.is_number}
    layers = range(1, (program.layers or 1) + 1) if target.has(atoms.LAYER) else [None]
    out = []
    for t in layers:  # a target that changes with the layer (hqs's lam/beta_t): one fit per layer
        try:
            g = np.asarray(reference.value_of(target, {**env, atoms.LAYER.name: t}), dtype=float).reshape(-1)
        except Exception:  # reads a param or a let: only the constructor knows
            return "computed at construction (it reads values given there)"
        z = np.linspace(-r, r, g.size)
        mu = np.linspace(-r, r, rbfs)
        A = np.exp(-0.5 * ((z[:, None] - mu) / (2 * r / (rbfs - 1))) ** 2)
        w = np.linalg.lstsq(A, g, rcond=None)[0]
        err, top = float(np.abs(A @ w - g).max()), float(np.abs(g).max())
        out.append(f"{'' if t is None else f'layer {t}: '}{err:.3g} (max |target| {top:.3g}, max |weight| "
                   f"{float(np.abs(w).max()):.3g})")
    return "; ".join(out) + " at the defaults"


def _summary(word, rbfs, r, m, learned, tied):
    gamma = 2 * r / (rbfs - 1)
    return [f"grid: {rbfs} Gaussian RBFs, centres equally spaced on [-{r:g}, {r:g}], width gamma = {gamma:.4g} "
            f"(their spacing); fitted by least squares on {m} points of [-{r:g}, {r:g}]",
            f"forward sums the {2 * atoms.RBF_RADIUS} centres nearest each value: within "
            f"{atoms.rbf_tail_bound():.2g} max|W| of the full sum",
            f"weights: {', '.join(d.name + ' ' + ' x '.join(d.shape) for d in learned)}, "
            f"{Tying.sharing(learned, tied)}; fit errors in net.{ATTRIBUTE[word]}"]


# an adjoint -> (the operator whose output its elementwise function reads, where the adjoint's operand is):
# convT(K, E(conv(K, u))), grad2dT(E(grad2d(u))), diffT(E(diff(z))); the other arguments must agree (K, pad)
ADJOINTS = {atoms.ConvT: (atoms.Conv, 1), atoms.Grad2DT: (atoms.Grad2D, 0), atoms.DiffT: (atoms.Diff, 0)}


def _channels(program, z) -> str:
    """The rows of an influence weight: one per filter of conv(K, u) (K : R[k, s, s]), 2 for grad2d, else 1."""
    if isinstance(z, atoms.Conv):
        K = z.args[0]
        shape = program.decl(K.name).shape if getattr(K, "name", None) and program.has(K.name) else ()
        return shape[0] if len(shape) == 3 else "1"
    return "2" if isinstance(z, atoms.Grad2D) else "1"


def _start(program, directive, item):
    """What both forms read first: (word, span, rbfs, range, tying, fit points); an update is needed."""
    word, span = item[0]
    rbfs, r = _options(program, directive, item)
    tying = weight_tying(program, item)
    if program.step is None:
        raise fail(program, f"learn {word} needs an update", span, "put it after derive (or write an update)")
    return word, span, rbfs, r, tying, atoms.rbf_fit_points(rbfs)


def learn_influence(program, directive, item):
    word, span, rbfs, r, tying, m = _start(program, directive, item)
    per_sample = {d.name for d in program.decls if d.kind in ("input", "var", "temp")}
    learned, lines, taken = [], [], set()

    def replace_adjoint(coeff, adjoint):
        """coeff * convT(K, E(conv(K, x))) -> sign * convT(K, rbf(conv(K, x), phi, r)) (or grad2dT, diffT), or None."""
        forward, operand = ADJOINTS[type(adjoint)]
        V = adjoint.args[operand]
        body = inline_temps(program, V)
        same = lambda c: all(a == b for i, (a, b) in enumerate(zip(c.args, adjoint.args)) if i != operand)  # noqa: E731
        found = {c for c in body.atoms(forward) if same(c)}
        if len(found) != 1:
            return None
        (z,) = found
        dummy = sp.MatrixSymbol("_z_", *z.shape)
        rest = body.xreplace({z: dummy})
        if {getattr(s, "name", None) for s in rest.free_symbols} & per_sample:
            return None  # E reads the state elsewhere too: not a function of the operator's output alone
        sign = -1 if sp.sympify(coeff).could_extract_minus_sign() else 1
        size = sign * coeff
        grid = atoms.RbfGrid(_num(r), sp.Integer(m))
        ones = {o: atoms.Ones(sp.Integer(m), 1) for o in rest.atoms(atoms.Ones)}
        target = size * rest.xreplace({dummy: grid, **ones})
        if isinstance(target, sp.MatrixExpr):
            target = target.doit() if not target.has(atoms.Rbf) else target
        channels = _channels(program, z)
        suffix = "" if not learned else str(len(learned) + 1)
        value = atoms.RbfFit(target, _num(r), sp.Integer(rbfs), sp.Symbol(channels, integer=True, positive=True)
                             if not channels.isdigit() else sp.Integer(int(channels)), sp.Integer(KIND[word]))
        w = weight(program, "phi" + suffix, (channels, str(rbfs)), value, directive, tying, taken, also=("phi",))
        _per_layer_target(program, directive, item, w)
        learned.append(w)
        args = list(adjoint.args)
        args[operand] = dummy
        per = "one function per filter" if isinstance(z, atoms.Conv) else \
            "one function per direction" if isinstance(z, atoms.Grad2D) else "one function"
        lines.append(f"{math(size)}*({math(body)}) in {math(adjoint.func(*args)).replace('_z_', '.')} "
                     f"-> {w.name}({math(z)}), {per} (rows of {w.name})")
        lines.append(f"{w.name}: fit error {_fit_error(program, target, r, rbfs)}")
        args[operand] = atoms.Rbf(z, make_symbol(w.name, w.shape), _num(r))
        new = adjoint.func(*args)
        return new if sign == 1 else -new

    def visit(expr):
        if isinstance(expr, sp.MatMul):
            coeff, mats = expr.as_coeff_matrices()
            if len(mats) == 1 and isinstance(mats[0], tuple(ADJOINTS)):
                new = replace_adjoint(coeff, mats[0])
                if new is not None:
                    return new
        if isinstance(expr, tuple(ADJOINTS)):
            new = replace_adjoint(sp.Integer(1), expr)
            if new is not None:
                return new
        if not expr.args:
            return expr
        args = [visit(a) for a in expr.args]
        return expr if all(a is b for a, b in zip(args, expr.args)) else expr.func(*args)

    step = program.step.map(visit)
    if not learned:
        raise fail(program, "learn influence found no operator adjoint of an elementwise function of that "
                   "operator's output (convT(K, E(conv(K, u))), grad2dT(E(grad2d(u))), diffT(E(diff(z)))) in the update: "
                   "nothing to replace", span,
                   _drop_hint(directive, item))
    tied = tying.finish(program, directive, learned)
    return with_learned(program, step, tied, learned).noted(
        directive.label(), *lines, *_summary(word, rbfs, r, m, learned, tied),
        *[f"{name} <- {math(e)}" for name, e in step.lets + step.assigns])


def learn_shrink(program, directive, item):
    word, span, rbfs, r, tying, m = _start(program, directive, item)
    learned, lines, taken = [], [], set()

    def shrink(atom, index):
        x, t = atom.args[0], atom.args[1]
        grid = atoms.RbfGrid(_num(r), sp.Integer(m))
        target = grid - atom.func(grid, t, *atom.args[2:])
        channels = "1"
        if atoms.tensor_rank(x) == 3:  # an image stack: one function per channel, where a conv or grad2d says how many
            ops = sorted(inline_temps(program, x).atoms(atoms.Conv, atoms.Grad2D), key=str)
            counts = {_channels(program, op) for op in ops} - {"1"}
            if len(counts) == 1:
                channels = counts.pop()
        suffix = "" if index == 1 else str(index)
        value = atoms.RbfFit(target, _num(r), sp.Integer(rbfs), sp.Integer(int(channels)) if channels.isdigit()
                             else sp.Symbol(channels, integer=True, positive=True), sp.Integer(KIND[word]))
        w = weight(program, "psi" + suffix, (channels, str(rbfs)), value, directive, tying, taken, also=("psi",))
        _per_layer_target(program, directive, item, w)
        learned.append(w)
        lines.append(f"{math(atom)} -> {math(x)} - {w.name}({math(x)}), {w.name} fitted to v - "
                     f"{atom.dp_name}(v, {math(t)})")
        lines.append(f"{w.name}: fit error {_fit_error(program, target, r, rbfs)}")
        return x - atoms.Rbf(x, make_symbol(w.name, w.shape), _num(r))

    step, count = map_thresholds(program, shrink, (atoms.Soft, atoms.Hard))
    if not count:
        raise fail(program, "learn shrink found no soft or hard threshold of a state or input in the update: "
                   "nothing to replace", span,
                   _drop_hint(directive, item))
    tied = tying.finish(program, directive, learned)
    return with_learned(program, step, tied, learned).noted(
        directive.label(), *lines, *_summary(word, rbfs, r, m, learned, tied),
        *[f"{name} <- {math(e)}" for name, e in step.lets + step.assigns])
