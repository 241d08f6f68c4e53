"""Image and signal programs: the atoms declared with the fuzz role "operator" (diff, grad2d, conv: read from
their declarations, Palette.operators) applied to a var inside an objective, by the derive methods that take
operators. operator_program(gen) writes one into gen.lines:

    dims   h, w                               (a filter bank's k, s when the operator reads one)
    input  f : R[h, w]                        (R[n] for an operator of signals)
    param  K : R[k, s, s] = dct | random      (an operator whose operand is its second argument)
    hyper  lam = 0.1
    var    u : R[h, w] = f
    minimize 0.5*sqnorm(u - f) + lam*norm1(OP(u))         derive pdhg(...)
             0.5*sqnorm(u - f) + c*sum(phi(OP(u)))         derive gd(step = ...)
             c*sqnorm(OP(u) - g) + lam*norm1(u)            derive proxgrad / fista (step = ...)
             0.5*sqnorm(OP(u) - g) + lam*norm1(OP2(u))     derive admm / hqs / pdhg
    unroll N, learn K / lam [untied], output u

a fifth of them with a term that folds to a zero of the operator's shape (_zero_form: `let Z = K - K`, OP(u) -
OP(u), 0*OP(u), exp of a difference), and a small share of deliberate mistakes (a signal operator on an image, a non-square filter bank, an unknown
boundary, `= dct` on one kernel)."""
from __future__ import annotations

from dpc.fuzz.expressions import ATOM, Node

_IMAGE = ("h", "w")


def _input_rank(atom) -> int | None:
    """1 for an operator of signals (diff), 2 of images (grad2d, conv): read from its shape rule."""
    from dpc.atoms import ShapeError
    operand = atom.linear.operand if atom.linear is not None else 0
    for rank, shape in ((1, ("n",)), (2, ("h", "w"))):
        args = [("k", "s", "s")] * operand + [shape]
        try:
            atom.shape(args)
        except (ShapeError, TypeError, ValueError):
            continue
        return rank
    return None


def _output_shape(atom, filters, shape) -> tuple:
    operand = atom.linear.operand if atom.linear is not None else 0
    return tuple(atom.shape([tuple(filters)] * operand + [tuple(shape)]))


class OperatorCall:
    """How to write one operator's call: its filter (when its operand is the second argument) and options."""

    def __init__(self, gen, atom, shape, filters=None, options=None):
        self.gen, self.atom, self.shape, self.filters = gen, atom, shape, filters
        self.options = options or {}

    def __call__(self, arg: Node) -> Node:
        g = self.gen
        args = ([g.name(self.filters)] if self.filters else []) + [arg]
        args += [Node(ATOM, f"{k} = {v}") for k, v in self.options.items()]
        return g.call(self.atom.name, *args)


def _zero_form(g, op, u) -> Node:
    """OP(u) in a form sympy folds through a zero (session 7: a stack's zero was printed 2-D): a filter bank's
    `let Z = K - K` (or 0*K) convolved, OP(u) - OP(u), 0*OP(u), or OP(u) times exp of such a difference (the zero
    inside an entrywise atom). The lets go before `var`, which the caller writes after this returns: here they
    are inserted before the last line, the var's."""
    forms = ["difference", "times zero", "exp"] + (["zero bank"] * 2 if op.filters else [])
    form = g.pick(forms)
    if form == "zero bank":
        z = g.fresh(["Z", "K0", "zeroK"])
        g.declare(z, g.decl_shape(op.filters), "let")
        zero = g.pick([f"{op.filters} - {op.filters}", f"0 * {op.filters}", f"0*{op.filters}"])
        g.lines.insert(len(g.lines) - 1, f"let    {z} = {zero}")
        bank = OperatorCall(g, op.atom, op.shape, z, op.options)
        return bank(g.name(u)) if g.chance(0.5) else g.bin("+", op(g.name(u)), bank(g.name(u)))
    if form == "difference":
        return g.bin("-", op(g.name(u)), op(g.name(u)))
    if form == "times zero":
        return g.bin("*", Node(ATOM, "0"), op(g.name(u)))
    return g.bin("*", op(g.name(u)), g.call("exp", g.bin("-", op(g.name(u)), op(g.name(u)))))


def operator_program(g):
    """One image or signal program (see the module's docstring) into g.lines."""
    ops = g.atoms.operators
    if not ops:
        return g.objective_program()
    g.header("operator")
    atom = g.choose(ops)
    rank = _input_rank(atom)
    if rank is None or g.chance(g.mistake(0.03)):  # a mistake: an operator on the wrong kind of value
        rank = 2 if rank == 1 else 1
    mistaken = rank != _input_rank(atom)
    # sizes: named dims mostly; the checker draws 2..7 for named ones
    if rank == 1:
        n = g.fresh(["n", "m", "N", "d"])
        shape = (n,) if g.chance(0.9) else (g.pick(["5", "7"]),)
    else:
        h, w = g.fresh(["h", "H", "rows"]), g.fresh(["w", "W_", "cols"])
        shape = (h, w) if g.chance(0.9) else (g.pick(["4", "6"]), g.pick(["5", "7"]))
    dims = [d for d in shape if not d.isdigit()]
    filters = None
    operand = atom.linear.operand if atom.linear is not None else 0
    fshape = None
    if operand == 1:
        bank = g.chance(0.7)
        s = g.weighted([(3, "3"), (2, "2"), (1, "s"), (g.mistake(0.05), "s1")])
        k = g.weighted([(2, "k"), (2, g.pick(["2", "3", "4"]))]) if bank else None
        if s in ("s", "s1"):
            dims.append("s")
        if k == "k":
            dims.append("k")
        fshape = ((k,) if bank else ()) + (("s", s) if s == "s1" else (s, s))  # s1: non-square, a mistake
    if dims:
        g.lines.append("dims   " + ", ".join(dict.fromkeys(dims)))
    g.dims = list(dims)
    f = g.fresh(["f", "x", "y", "obs"])
    g.decl("input", f, shape)
    if fshape is not None:
        filters = g.fresh(["K", "k0", "B"])
        g.declare(filters, fshape, "param")
        init = g.weighted([(2, ""), (2, " = dct" if len(fshape) == 3 else ""), (1, " = random"),
                           (g.mistake(0.05), " = dct")])
        g.lines.append(f"param  {filters} : {g.type_text(fshape)}{init}")
    options = {}
    if getattr(atom, "options", None):
        for key, values in dict(atom.options).items():
            if isinstance(values, tuple) and g.chance(0.75):
                options[key] = g.weighted([(1, v) for v in values] + [(g.mistake(0.1), "mirror")])
    op = OperatorCall(g, atom, shape, filters, options)
    try:
        out_shape = _output_shape(atom, fshape or (), shape)
    except Exception:  # noqa: BLE001 - a mistaken call: written anyway, the compiler must locate it
        out_shape = shape
    hypers = g.hypers(g.r.randint(1, 2), ["lam", "mu"])
    lam = g.name(hypers[0])
    # a data term sqnorm(OP(u) - g2) needs g2 declared of OP's output shape: not R[n - 1] (a type's sizes are
    # dims or numbers), so diff's programs put it in a penalty or a smooth term
    declarable = all(d.isdigit() or d.isidentifier() for d in out_shape)
    family = g.weighted([(4, "pdhg"), (3, "gd"), (2 if declarable else 0, "proxgrad"),
                         (1.5 if atom.name == "conv" or mistaken else 0.5 if declarable else 0, "solve")])
    g2 = f  # the observation of a data term sqnorm(OP(u) - g2): f when OP keeps the shape, else an input
    if family in ("proxgrad", "solve") and out_shape != shape:
        g2 = g.fresh(["g", "obs2", "y2"])
        g.decl("input", g2, out_shape)
    u = g.fresh(["u", "z", "x_", "v"])
    start = g.weighted([(3, g.name(f)), (1, Node(ATOM, "0")), (1, None)])
    g.decl("var", u, shape, start)
    data = g.bin("*", Node(ATOM, "0.5"), g.call("sqnorm", g.bin("-", g.name(u), g.name(f))))
    learnable = list(hypers) + ([filters] if filters else [])
    if family == "pdhg":
        reg = g.weighted([(6, "norm1"), (0.5, "sqnorm"), (1, "other")])
        if reg == "other":
            penalties = [a.name for a in g.atoms.reductions + g.atoms.matrix_reductions if a.prox is not None]
            reg = g.pick(penalties or ["norm1"])
        objective = g.bin("+", data, g.bin("*", lam, g.call(reg, op(g.name(u)))))
        steps = g.weighted([(4, ""), (1, "(tau = 0.1, sigma = 0.1)"), (1, "(tau = 0.2)"),
                            (g.mistake(0.2), "(tau = 5, sigma = 5)")])
        derive = f"derive pdhg{steps}"
    elif family == "gd":
        phi = g.choose(g.atoms.objective_smooth)
        inner = op(g.name(u))
        if g.chance(0.3):
            inner = g.bin("/", inner, g.num(True))
        term = g.call("sum", g.call(phi.name, inner)) if phi is not None else g.call("sqnorm", inner)
        c = g.weighted([(2, lam), (1, g.num(True, True))])
        objective = g.bin("+", data, g.bin("*", c, term))
        derive = "derive gd" + g.weighted([(4, f"(step = {g.pick(['0.05', '0.1', '0.01'])})"), (1, "")])
    elif family == "proxgrad":
        fit = g.call("sqnorm", g.bin("-", op(g.name(u)), g.name(g2)))
        objective = g.bin("+", g.bin("*", Node(ATOM, "0.5"), fit), g.bin("*", lam, g.call("norm1", g.name(u))))
        derive = f"derive {g.pick(['proxgrad', 'fista'])}" + g.weighted(
            [(4, f"(step = {g.pick(['0.05', '0.1', '0.01'])})"), (1, "")])
    else:  # an operator in the data term and another in the penalty: admm/hqs's solves, pdhg's prox by a solve
        second = g.choose([a for a in g.atoms.operators if _input_rank(a) == rank and a.linear.operand == 0]
                          or [atom])
        op2 = OperatorCall(g, second, shape)
        if second.linear.operand == 1:
            op2 = op
        fit = g.call("sqnorm", g.bin("-", op(g.name(u)), g.name(g2)))
        objective = g.bin("+", g.bin("*", Node(ATOM, "0.5"), fit), g.bin("*", lam, g.call("norm1", op2(g.name(u)))))
        derive = g.weighted([(3, "derive admm"), (1, "derive admm(rho = 0.5)"), (2, "derive hqs"),
                             (1, "derive hqs(beta = 0.1, growth = 2)"), (1, "derive pdhg"),
                             (1, "derive admm(solve = cg(iters = 30))"), (0.5, "derive admm(solve = fft)")])
    if not mistaken and g.chance(0.2):  # a term that folds to a zero of OP's shape (an image stack's for a bank)
        objective = g.bin("+", objective, g.bin("*", Node(ATOM, "0.5"), g.call("sqnorm", _zero_form(g, op, u))))
    g.lines.append(f"minimize {objective.text}")
    g.lines.append(derive)
    g.lines.append(f"unroll {g.r.randint(1, 5)}")
    if g.chance(0.35):
        chosen = g.r.sample(learnable, g.r.randint(1, min(2, len(learnable))))
        g.lines.append("learn  " + ", ".join(chosen) + g.weighted([(3, ""), (1, " untied"), (1, " tied")]))
    if g.chance(0.6):
        g.lines.append(f"output {u}")
