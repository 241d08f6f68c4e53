"""What the planner computes once instead of in every layer (pure functions of the program's steps; each
new name comes from the namespace given, in the order found, so the same program names them the same).

  hoist_invariants   what every layer computes the same (D.T @ y, convT(k, f), SC2Net's tied U_i @ x + b_i):
                     once, before the layers
  all_layer_products all_layers(W @ x) of the batch-products pass: every layer's in one batched product
  hoist_let_products a per-layer let's matrix product that reads nothing per layer (ADMM-Net's Dd.T @ Dd)
  share_repeated     an atom call or matrix product a layer computes twice (TNRD's conv(K, u) in rho'): once
"""
from __future__ import annotations

import sympy as sp

from dpc import atoms, graph
from dpc.ir import Program, Step, make_symbol


def hoist_invariants(p: Program, ns, first: Step | None, step: Step, varying: set[str]):
    """What every layer computes the same, computed once before the first layer: a subexpression of the step
    that costs something (a matrix product, an atom or operator call: ISTA's D.T @ y in an update, the
    deconvolution's convT(k, f), SC2Net's tied U_i @ x + b_i) and reads a tensor (an input, a param, a
    shared weight, a let) but nothing in `varying` (states, temporaries, per-layer values and the lets of
    them), nor a name bound in the step (the layer number, a sum's index, a CG map's placeholder). A property
    of the expression, whatever the learn form: an untied weight is in `varying` (its all_layers(W @ x) stays
    for all_layer_products). Only the step is searched: a value only the first layer reads stays there; the
    first layer reads what was hoisted where it computes the same. Each is one tensor per call, whatever the
    number of layers. Returns (first, step, [(name, expr)]), the steps reading the names."""
    from dpc.passes.batch_products import AllLayers
    inputs = {d.name for d in p.of_kind("input")}
    tensors = inputs | {d.name for d in p.decls if d.kind in ("param", "weight", "let")}
    # only declared values and dims: a name bound inside the step (a sum's index j, the CG map's placeholder
    # _cg_u, the layer number) is not one value for the whole call
    fixed_names = ({d.name for d in p.decls} | set(p.dims)) - set(varying)
    found: dict = {}

    def invariant(e):  # softss's share grows with the layer number: never the same in every layer
        names = graph.names_in(e)
        return bool(names & tensors) and names <= fixed_names and not e.has(atoms.LAYER)

    def hoisted(e):
        if e not in found:
            found[e] = ns.fresh(hoist_name(e, inputs))
        return _temporary(found[e], e)

    def visit(e):
        if isinstance(e, AllLayers):  # every layer's W_k @ x: batched by all_layer_products, not hoisted
            return e
        if isinstance(e, sp.MatAdd):  # U x + V z + b: the invariant terms U x + b together
            fixed = [a for a in e.args if invariant(a)]
            if len(fixed) >= 2 and any(_costly(a) for a in fixed):
                rest = [visit(a) for a in e.args if a not in fixed]
                return sp.MatAdd(hoisted(sp.MatAdd(*fixed)), *rest) if rest else hoisted(sp.MatAdd(*fixed))
        if _costs(e):
            coeff, key = _product(e)  # t * D.T @ y (t a state): D.T @ y is the same in every layer
            if invariant(key):
                return visit(coeff) * hoisted(key) if coeff != 1 else hoisted(key)
        if not e.args:
            return e
        return _rebuilt(e, [visit(a) for a in e.args])

    step = step.map(visit)  # hoisting pays only in the loop; the first layer reuses what was hoisted
    if first is not None and found:
        reuse = {e: _temporary(name, e) for e, name in found.items()}

        def swap(e):  # the same value, or a scalar times it (the folded first layer's D.T @ y / L)
            if e in reuse:
                return reuse[e]
            if _costs(e):
                coeff, key = _product(e)
                if key in reuse:
                    return swap(coeff) * reuse[key]
            return _rebuilt(e, [swap(a) for a in e.args]) if e.args else e

        first = first.map(swap)
    return first, step, [(name, e) for e, name in found.items()]


def _product(e):
    """(c, P) with e = c * P: a product's scalar factor and its matrices (P alone is worth a name, whatever c
    is); anything else is (1, e)."""
    if isinstance(e, sp.MatMul):
        coeff, mats = e.as_coeff_matrices()
        if coeff != 1 and all(getattr(m, "is_Matrix", False) for m in mats):
            return coeff, sp.MatMul(*mats)
    return sp.Integer(1), e


def _rebuilt(e, args):
    """e with new arguments (e itself where none changed)."""
    if all(a is b for a, b in zip(args, e.args)):
        return e
    # Max/Min re-canonicalise their arguments (factor_terms), which fails on a matrix inside opnorm(...)
    return e.func(*args, evaluate=False) if isinstance(e, (sp.Max, sp.Min)) else e.func(*args)


def _costs(e) -> bool:
    """A node worth computing once: a product of two or more matrices or vectors (a scalar times one is not),
    or an atom or operator call (conv, convT, grad2d, circsolve, sqnorm, ...)."""
    from dpc.declare import of
    if isinstance(e, sp.MatMul):
        return len([m for m in e.as_coeff_matrices()[1] if getattr(m, "is_Matrix", False)]) >= 2
    return of(e) is not None or isinstance(e, atoms.CG)


def _costly(e) -> bool:
    """e or a node inside it costs something (_costs)."""
    return any(_costs(node) for node in sp.preorder_traversal(e))


def all_layer_products(p: Program, ns, first: Step | None, step: Step):
    """The products the batch-products pass marked (all_layers(W @ x)) -> a name each, read in layer k as
    NAME[k]; returns the steps reading those names and {name: (matrix, vector)}."""
    from dpc.passes.batch_products import AllLayers
    found: dict = {}
    inputs = {d.name for d in p.of_kind("input")}

    def named(e):
        if e not in found:
            found[e] = ns.fresh(hoist_name(e.args[0], inputs))
        return make_symbol(found[e], (str(e.shape[0]),))

    def unmark(e):
        return e.replace(lambda a: isinstance(a, AllLayers), named)

    first = first.map(unmark) if first is not None else None
    step = step.map(unmark)
    return first, step, {name: tuple(e.args[0].as_coeff_matrices()[1]) for e, name in found.items()}


def hoist_let_products(p: Program, ns, layer_lets: list[str], varying: set[str]):
    """Matrix products inside a per-layer let that read nothing in `varying` (ADMM-Net's
    A_k = rho_k * Dd.T @ Dd + eye: Dd.T @ Dd) are computed once per call, before the layers. Returns
    ({let: its value with those products named}, [(name, product)])."""
    found: dict = {}

    def visit(e):
        if isinstance(e, sp.MatMul) and e.shape[1] != 1:
            coeff, mats = e.as_coeff_mmul()
            mats = list(mats.args) if isinstance(mats, sp.MatMul) else [mats]
            matrices = [m for m in mats if getattr(m, "is_Matrix", False)]
            scalars = [m for m in mats if not getattr(m, "is_Matrix", False)]
            product = sp.MatMul(*matrices) if len(matrices) >= 2 else None
            if product is not None and not graph.names_in(product) & varying:
                if product not in found:
                    found[product] = ns.fresh("".join(  # Dd.T @ Dd -> DdTDd
                        f"{m.arg.name}T" if isinstance(m, sp.Transpose) and hasattr(m.arg, "name")
                        else getattr(m, "name", "M") for m in matrices))
                named = make_symbol(found[product], (str(product.shape[0]), str(product.shape[1])))
                return sp.Mul(coeff, *scalars) * named if (coeff != 1 or scalars) else named
        if not e.args:
            return e
        new = [visit(a) for a in e.args]
        if all(a is b for a, b in zip(new, e.args)):
            return e
        # Max/Min re-canonicalise their arguments (factor_terms), which fails on a matrix inside opnorm(...)
        return e.func(*new, evaluate=False) if isinstance(e, (sp.Max, sp.Min)) else e.func(*new)

    values = {name: visit(p.decl(name).value) for name in layer_lets}
    return values, [(name, product) for product, name in found.items()]


def read_whole(p: Program) -> set[str]:
    """The per-layer weights that an all_layers(W @ x) product of the batch-products pass reads."""
    from dpc.passes.batch_products import AllLayers
    found = set()
    for step in (p.step, p.first_step):
        for _, e in step.equations() if step is not None else ():
            for node in sp.preorder_traversal(e):
                if isinstance(node, AllLayers):
                    matrix = node.args[0].as_coeff_matrices()[1][0]
                    found.add((matrix.arg if isinstance(matrix, sp.Transpose) else matrix).name)
    return found


def hoist_name(expr, inputs) -> str:
    """Wx for W @ x, U_ix_b_i for U_i @ x + b_i (the names read, matrices before the input), DTy for D.T @ y (a
    transposed matrix marked T), convT_kf for convT(k, f) (an atom call: its name and what it reads)."""
    from dpc.declare import of
    if isinstance(expr, sp.MatAdd):
        return "_".join(hoist_name(a, inputs) for a in expr.args)
    if not isinstance(expr, sp.MatMul) and of(expr) is not None:
        return _shared_name(expr)
    names = graph.names_in(expr)
    transposed = {node.arg.name for node in sp.preorder_traversal(expr)
                  if isinstance(node, sp.Transpose) and hasattr(node.arg, "name")}
    return "".join(n + "T" * (n in transposed) for n in sorted(names - inputs)) + "".join(sorted(names & inputs))


def share_repeated(ns, steps: list[Step | None], memo: dict | None = None):
    """Each layer's repeated expensive subexpressions computed once: an atom or operator call (conv(K, u)
    in TNRD's influence rho'(z) = z / (1 + (z/b)^2) is read twice) or a product of two or more matrices that
    occurs more than once in the layer's equations becomes a temporary of the step, computed just before
    the first equation that reads it. Not a value of literals, a symbol or a transpose (a view): nothing
    that costs less than a name. The largest repeated one is named first, so one inside it that occurs only
    there stays inside its definition. Returns (the steps, the names made); `memo` (expr -> name) gives the
    same subexpression the same name in the first layer and the later ones."""
    memo = {} if memo is None else memo
    out, made = [], []
    for step in steps:
        if step is None:
            out.append(None)
            continue
        step, names = _share_in_step(ns, step, memo)
        out.append(step)
        made += [n for n in names if n not in made]
    return out, made


def _shared_key(node):
    """The subexpression a node computes that is worth a name, or None: an atom call, or the matrices of a
    product of two or more (a scalar times them: the product without the scalar)."""
    from dpc.declare import of
    if not getattr(node, "free_symbols", None) or isinstance(node, (sp.Symbol, sp.MatrixSymbol, sp.Transpose)):
        return None
    if isinstance(node, sp.MatMul):
        _, mats = node.as_coeff_matrices()
        matrices = [m for m in mats if getattr(m, "is_Matrix", False)]
        if len(matrices) >= 2 and len(matrices) == len(mats):
            return sp.MatMul(*matrices) if len(matrices) != len(node.args) else node
        return None
    return node if of(node) is not None else None


def _nodes(expr):
    out = [expr]
    for a in expr.args:
        out += _nodes(a)
    return out


def _share_in_step(ns, step: Step, memo: dict):
    lets, assigns = list(step.lets), list(step.assigns)
    new: list = []  # (name, expr, symbol), in the order named
    while True:
        counts: dict = {}
        for _, e in lets + assigns + [(n, d) for n, d, _ in new]:
            for node in _nodes(e):
                key = _shared_key(node)
                if key is not None:
                    counts[key] = counts.get(key, 0) + 1
        repeated = [k for k, c in counts.items() if c >= 2]
        if not repeated:
            break
        key = max(repeated, key=lambda k: len(_nodes(k)))  # the first found of the largest
        if key not in memo:
            memo[key] = ns.fresh(_shared_name(key))
        name = memo[key]
        symbol = _temporary(name, key)

        def swap(e, key=key, symbol=symbol):
            if e == key:
                return symbol
            if isinstance(e, sp.MatMul) and e != key and _shared_key(e) == key:  # c * (A @ B): c * T
                coeff, _ = e.as_coeff_matrices()
                return coeff * symbol
            if not e.args:
                return e
            args = [swap(a) for a in e.args]
            return e if all(a is b for a, b in zip(args, e.args)) else e.func(*args)

        lets = [(n, swap(e)) for n, e in lets]
        assigns = [(n, swap(e)) for n, e in assigns]
        new = [(n, swap(d), s) for n, d, s in new] + [(name, key, symbol)]
    if not new:
        return step, []
    # each temporary just before the first equation that reads it, what it reads first
    defs = {n: d for n, d, _ in new}
    ordered: list = []

    def place(names):
        for n in sorted(names & defs.keys() - {m for m, _ in ordered}, key=list(defs).index):
            place(graph.names_in(defs[n]))
            if n not in {m for m, _ in ordered}:
                ordered.append((n, defs[n]))

    for n, e in lets:
        place(graph.names_in(e))
        ordered.append((n, e))
    for _, e in assigns:
        place(graph.names_in(e))
    return Step(tuple(ordered), tuple(assigns)), [n for n, _, _ in new]


def _temporary(name, expr):
    """The symbol of a temporary holding expr: a scalar, a vector or matrix, or an image stack (rank 3)."""
    from dpc.ir import ImageSymbol
    if not getattr(expr, "is_Matrix", False):
        return sp.Symbol(name, real=True)
    if atoms.tensor_rank(expr) == 3:
        return ImageSymbol(name, *expr.shape)
    return sp.MatrixSymbol(name, *expr.shape)


def _shared_name(expr) -> str:
    """conv_Ku for conv(K, u), WTWz for W.T @ W @ z: the atom's name (none for a product), then the names
    read in order (a transpose marked T), shortened to the atom's name where that grows past 12 characters."""
    from dpc.declare import of
    words: list[str] = []

    def visit(node):  # not into a symbol's shape
        if isinstance(node, (sp.Symbol, sp.MatrixSymbol)):
            words.extend([node.name] if node.name not in words else [])
        else:
            for a in node.args:
                visit(a)

    visit(expr)
    read = "".join(words)
    if isinstance(expr, sp.MatMul):
        read = "".join(f"{m.arg.name}T" if isinstance(m, sp.Transpose) and hasattr(m.arg, "name")
                       else getattr(m, "name", "M") for m in expr.args)
        return read if len(read) <= 12 else "product"
    atom = of(expr).name
    return f"{atom}_{read}" if read and len(atom) + len(read) < 12 else atom
