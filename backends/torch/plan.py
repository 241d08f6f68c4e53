"""The emitter's decisions, taken once before any code is written: `plan_module(program)` -> a Plan.

Which values are per layer and how each is stored (stacked or listed, its first copy frozen), which lets
are computed in __init__, in forward or in every layer, which constant matrices are factored, what is
hoisted out of the layers, which products are batched over all layers, whether the first layer is a
folded one of its own, and every local name the module invents. The plan is data: `str(plan)` prints it,
tests check it without reading generated text, and the writers (docstrings, constructor, forward; emit
assembles the module) only write what it says.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from dpc import atoms, graph
from dpc.backends.torch.hoist import (all_layer_products, hoist_invariants, hoist_let_products, read_whole,
                                      share_repeated)
from dpc.backends.torch.names import Namespace
from dpc.errors import DpcError
from dpc.ir import Program, Step
from dpc.printing import format_step, math


@dataclass(frozen=True)
class Factor:
    """A constant matrix that forward solves with, factored once in __init__ (Cholesky where the derivation
    knows it is positive definite, else LU): a layer then costs two triangular solves."""

    factor: str
    pivots: str
    cholesky: bool


@dataclass(frozen=True)
class Bound:
    """A clamp that keeps a learned value inside a requirement that also reads other values (a step below 2/L,
    PDHG's tau*sigma*opnorm(K)^2 < 1): value <= bound (upper) or >= bound, at (1 - 1e-6) of it where strict."""

    bound: sp.Basic
    upper: bool
    strict: bool
    why: str


@dataclass(frozen=True)
class Constrained:
    """A learned hyper with a requirement: trained as `raw` (its nn.Parameter), exposed by its own name as
    log(1 + exp(raw)) (> 0 or >= 0), then clamped by its bounds; the constructor's `constrain=False` keeps the
    value itself in `raw`."""

    raw: str
    relation: str | None   # "positive" or "nonnegative" (log(1 + exp(raw))), None: only bounds
    why: str
    bounds: tuple = ()


@dataclass(frozen=True)
class LearnedChecks:
    """The requirements (and cautions) that read learned values, checked in forward where training may have
    moved them (dpc.requirements.learned_requirements): eagerly, when a learned tensor changed since the check
    that passed last (`stamp`), never under torch.compile; `keyword` (constructor keyword and attribute)
    turns them off. Each check is (Requirement, caution, kept): a caution warns once (`warned`), a
    requirement raises; `kept` ones hold by the parametrisation and are checked only with constrain=False.
    An opnorm of a learned matrix that forward does not compute is estimated from below (`cache`:
    warm-started power iterations, runtime._opnorm_estimate)."""

    checks: tuple
    tensors: tuple[str, ...]   # the attributes whose stamp decides
    keyword: str
    stamp: str
    cache: str
    warned: str
    local: str                 # forward's local for the current stamp
    opnorms: str               # forward's local list of the opnorm estimates


@dataclass(frozen=True)
class FixedPoint:
    """`unroll until`: the locals of the loop that runs the update until every sample converged, and the
    names of what it reports (forward's `info` keyword, the module's `last_info` attribute)."""

    tol: sp.Basic
    implicit: bool      # backward implicit: no graph through the loop, the gradient at the fixed point
    iterate: str        # the update as a local function
    carried: str | None  # an output read from the update's temporaries, kept per sample like a state
    info: str           # forward's keyword: also return the per-sample iterations and residuals
    report: str         # the local dict of them
    history: str        # the states after every iteration (trace=True)
    last_info: str      # the module attribute that keeps the last call's report


@dataclass(frozen=True)
class Plan:
    program: Program = field(repr=False)
    kind: str                           # "closed", "unrolled" or "fixed point"
    loop: str                           # the layer loop's variable
    per_layer: tuple[str, ...]          # values with one copy per layer (untied weights, learn NAME untied)
    stacked: tuple[str, ...]            # per-layer values stored as one tensor with a leading steps axis
    listed: tuple[str, ...]             # per-layer values stored as an nn.ParameterList
    frozen_first: tuple[str, ...]       # listed values the (folded) first layer does not read: copy 0 frozen
    given: dict                         # per-layer param/hyper read outside the layers -> its attribute
    factors: dict                       # let -> Factor
    init_tensors: frozenset             # names whose value is a tensor in __init__ (else a Python float)
    init_lets: tuple[str, ...]          # lets computed in __init__
    fixed_lets: tuple[str, ...]         # lets of constants: computed once, kept on self
    forward_lets: tuple[str, ...]       # lets of learned values: recomputed in forward
    lets_before: tuple[str, ...]        # forward lets computed before the layers
    layer_lets: tuple[str, ...]         # lets of per-layer values: computed in every layer
    starts: tuple[str, ...]             # states given their start before the layers
    first: Step | None                  # the first layer where it differs (a folded start), else None
    step: Step | None                   # every (later) layer, hoisted and batched products named
    hoisted: tuple = ()                 # (name, expr): the same in every layer, computed once before them
    all_layers: dict = field(default_factory=dict)  # name -> (matrix, vector): every layer's in one product
    let_products: tuple = ()            # (name, product): a per-layer let's constant product, once per call
    layer_let_values: dict = field(default_factory=dict)  # per-layer let -> its value, products named
    copies: tuple[str, ...] = ()        # per-layer values the layers read: their copies taken once
    trace: str = ""                     # the list of every layer's output
    fixed_point: FixedPoint | None = None
    constrained: dict = field(default_factory=dict)  # learned hyper -> Constrained
    constrain: str = ""                 # the constructor keyword (and attribute) that turns them off
    learned_checks: LearnedChecks | None = None  # requirements on learned values, checked in forward
    shared: tuple[str, ...] = ()        # temporaries a layer computes once where its equations repeat them

    def storage(self, name: str) -> str:
        """The attribute that holds a value's parameter: its raw one where it is constrained."""
        return self.constrained[name].raw if name in self.constrained else name

    # --- views the writers read ---
    @property
    def p(self) -> Program:
        return self.program

    @property
    def like(self) -> str:
        """The tensor whose dtype and device new tensors take in __init__."""
        params = self.p.of_kind("param")
        return params[0].name if params else "_like"

    def unbound_dims(self) -> list[str]:
        """Dims no param's shape binds and no input gives at every call: constructor arguments."""
        bound = {dim for d in self.p.of_kind("param") for dim in d.shape}
        used = {dim for d in self.p.decls if d.kind in ("input", "var", "weight", "temp") for dim in d.shape}
        call = set(self.call_dims())
        return [dim for dim in self.p.dims if dim not in bound and dim in used and not dim.isdigit()
                and dim not in call]

    def init_dims(self) -> list[str]:
        """Dims that only params with a filter initialisation (`param K : R[k, s, s] = dct`) hold: optional
        constructor keywords, the sizes to build K with when K is not given (checked against K when it is)."""
        fixed = {dim for d in self.p.of_kind("param") if not d.init for dim in d.shape}
        held = {dim for d in self.p.of_kind("param") if d.init for dim in d.shape}
        return [dim for dim in self.p.dims if dim in held and dim not in fixed and not dim.isdigit()]

    def call_dims(self) -> list[str]:
        """Dims no param binds that an input's shape holds (the h, w of an image input): forward reads them
        from the inputs at every call, so one network runs on any size. Not one that a learned weight's shape
        or a let's or hyper's value reads (those are built in __init__): it stays a constructor argument."""
        bound = {dim for d in self.p.of_kind("param") for dim in d.shape}
        given = {dim for d in self.p.of_kind("input") for dim in d.shape}
        built = {dim for d in self.p.of_kind("weight") for dim in d.shape}
        for d in self.p.decls:
            if d.kind in ("let", "weight", "hyper") and d.value is not None:
                built |= {s.name for s in getattr(d.value, "free_symbols", ())}
        return [dim for dim in self.p.dims if dim in given and dim not in bound and dim not in built
                and not dim.isdigit()]

    def dim_binding(self, dim: str) -> tuple[str, int]:
        """(input, axis) forward reads a call dim from: the first input whose shape holds it."""
        for d in self.p.of_kind("input"):
            if dim in d.shape:
                return d.name, d.shape.index(dim) + 1
        raise KeyError(dim)

    def init_names(self) -> dict[str, str]:
        """Inside __init__ everything is a local."""
        names = {d.name: d.name for d in self.p.decls}
        names.update({dim: dim for dim in self.p.dims})
        return names

    def names(self, layer: str | None, in_forward: bool = False) -> dict[str, str]:
        """Inside forward/objective: attributes on self, layer `layer`'s copies of per-layer values; in forward
        a constrained value shared by the layers is a local, computed once per call."""
        fixed = set(self.fixed_lets)
        names = {dim: f"self.{dim}" for dim in self.p.dims}
        names.update({dim: dim for dim in self.call_dims()})  # read from the inputs at every call
        for d in self.p.decls:
            if d.kind in ("param", "hyper", "weight") or (d.kind == "let" and d.name in fixed):
                names[d.name] = f"self.{d.name}"
                if d.per_layer and layer is not None:  # layer k's copy, from the tuple of copies taken in forward
                    names[d.name] = f"{d.name}[{layer}]"
                elif d.name in self.given and layer is None:  # outside the layers: the value given
                    names[d.name] = f"self.{self.given[d.name]}"
            else:
                names[d.name] = d.name
        if in_forward:
            names.update({n: n for n in self.constrained if not self.p.decl(n).per_layer})
        for name, f in self.factors.items():  # solve(A, b) reads A's factors (printer)
            names[f"{name}.factor"] = (f"self.{f.factor}",) if f.cholesky else (f"self.{f.factor}", f"self.{f.pivots}")
        if layer is not None:  # the layer number t = 1..T (support selection's schedule)
            names[atoms.LAYER.name] = "1" if layer == "0" else f"({layer} + 1)"
        return names

    def batched(self, step: Step | None = None) -> set[str]:
        """Names with a batch axis: inputs, vector states, and what a step computes from them."""
        # under `unroll until` a scalar state is one per sample too ((batch, 1)): a converged sample keeps it
        out = {d.name for d in self.p.of_kind("input")} | \
            {d.name for d in self.p.states if d.shape or self.kind == "fixed point"}
        if step is not None:
            changed = True
            while changed:
                changed = False
                for name, expr in step.equations():
                    if name not in out and graph.names_in(expr) & out:
                        out.add(name)
                        changed = True
        return out

    def lets_for_layer(self, step: Step) -> list[str]:
        """The per-layer lets this layer reads (its step and the output expression), dependencies first."""
        return _lets_for_layer(self.p, step, self.layer_lets)

    def names_used_after_init(self) -> set[str]:
        """What forward and objective read (directly or through lets computed in forward)."""
        p = self.p
        used = graph.names_in(p.objective)
        exprs = [e for step in (p.step, p.first_step) if step is not None for _, e in step.equations()]
        exprs += [d.value for d in p.decls if d.kind in ("var", "output")]
        exprs += [p.decl(name).value for name in self.forward_lets] + [e for _, e in p.closed_form]
        for e in exprs:
            used |= graph.names_in(e)
        return used

    # --- printing ---
    def describe(self) -> str:
        p = self.p
        layers = f", {p.layers} layers" if p.layers else ""
        lines = [f"plan for {p.name}: {self.kind}{layers}" + (f", loop {self.loop}" if self.step else "")]

        def row(label, items):
            lines.append(f"  {label + ':':<22}{', '.join(items) if items else '-'}")

        row("per layer", [f"{n} ({'stacked' if n in self.stacked else 'listed'}"
                          f"{', copy 0 frozen' if n in self.frozen_first else ''})" for n in self.per_layer])
        row("given outside layers", [f"{n} as self.{a}" for n, a in self.given.items()])
        row("factored", [f"{n} ({'Cholesky' if f.cholesky else 'LU'}: self.{f.factor})"
                         for n, f in self.factors.items()])
        row("lets in __init__", self.init_lets)
        row("lets in forward", self.lets_before)
        row("lets in every layer", [f"{n} = {math(v)}" for n, v in self.layer_let_values.items()]
            or self.layer_lets)
        row("starts", self.starts)
        row("hoisted", [f"{n} = {math(e)}" for n, e in self.hoisted + self.let_products])
        row("batched over layers", [f"{n}[k] = {math(sp.MatMul(*mv))}" for n, mv in self.all_layers.items()])
        row("copies taken once", self.copies)
        row("shared in a layer", self.shared)
        if self.fixed_point is not None:
            fp = self.fixed_point
            lines.append(f"  until change <= {math(fp.tol)}{', backward implicit' if fp.implicit else ''}")
        if self.first is not None:
            lines.append("  first layer (folded start):")
            lines += format_step(self.first, "    ")
        if self.step is not None:
            lines.append("  every later layer:" if self.first is not None else "  every layer:")
            lines += format_step(self.step, "    ")
        for name, expr in p.closed_form:
            lines.append(f"  closed form: {name} = {math(expr)}")
        return "\n".join(lines) + "\n"

    __str__ = describe


def plan_module(p: Program) -> Plan:
    """The plan of a fully compiled program's module. Raises DpcError for what the module cannot hold."""
    _refuse_per_sample_matrices(p)
    trainable_deps = graph.depends_on_trainable(p)
    # dims are names too: forward reads the ones only inputs fix into locals (N, k = X.shape[1], X.shape[2])
    ns = Namespace([d.name for d in p.decls] + list(p.dims))
    loop = ns.fresh("k")
    per_layer = tuple(d.name for d in p.decls if d.per_layer)
    # a per-layer weight that one batched product reads whole (batch products) is one tensor with a leading
    # steps axis: its gradient comes out of that product already stacked. Every other per-layer value is an
    # nn.ParameterList, so each layer's gradient is its own tensor and backward stacks nothing.
    whole = read_whole(p)
    stacked = tuple(n for n in per_layer if n in whole)
    listed = tuple(n for n in per_layer if n not in whole)
    layer_lets = tuple(graph.per_layer_lets(p))
    lets = graph.ordered(p, ("let",))
    fixed_lets = tuple(n for n in lets if n not in trainable_deps)
    forward_lets = tuple(n for n in lets if n in trainable_deps)
    # outside the layers (a var's start, the objective) a per-layer param or hyper is the value given at
    # construction, kept as self.NAME_given
    outside = _read_outside_layers(p, objective=True)
    given = {d.name: ns.fresh(f"{d.name}_given") for d in p.decls
             if d.per_layer and d.kind in ("param", "hyper") and d.name in outside}
    factors = {}
    for name in _solved_constants(p, trainable_deps, layer_lets):
        factor, pivots = ns.fresh(f"{name}_factor"), ns.fresh(f"{name}_pivots")
        factors[name] = Factor(factor, pivots, bool(p.decl(name).spd))
    start_reads = _read_outside_layers(p, objective=False)
    kept: list = []
    constrained = _constrained(p, ns, kept)
    common = dict(
        constrained=constrained, constrain=ns.fresh("constrain") if constrained else "",
        learned_checks=_learned_checks(p, ns, kept, set(per_layer) | set(layer_lets)),
        program=p, loop=loop, per_layer=per_layer, stacked=stacked, listed=listed,
        frozen_first=tuple(sorted(_unread_by_first_layer(p, listed, layer_lets))), given=given, factors=factors,
        init_tensors=frozenset(_init_tensors(p)), init_lets=tuple(_init_lets(p, fixed_lets)),
        fixed_lets=fixed_lets, forward_lets=forward_lets, layer_lets=layer_lets,
        lets_before=tuple(n for n in forward_lets if n not in layer_lets or n in start_reads))
    out_decl = p.decl(p.output)
    output_expr = out_decl.value if out_decl.kind == "output" else None
    if p.closed_form:
        if per_layer:
            raise DpcError("a closed form is one layer: nothing in it can be learned per layer (untied)",
                           p.span_of_directive("learn")).with_source(p.source)
        return Plan(kind="closed", starts=(), first=None, step=None, **common)
    varying = {d.name for d in p.states} | set(per_layer) | set(layer_lets)
    if p.until is not None:
        _, step, hoisted = hoist_invariants(p, ns, None, p.step, varying | {n for n, _ in p.step.lets})
        return _plan_fixed_point(p, ns, common, step, hoisted, output_expr)
    first, step = p.first_step, p.step
    first, step, hoisted = hoist_invariants(p, ns, first, step, varying | {n for n, _ in step.lets})
    reads = set()
    for _, e in (first or step).equations():
        reads |= graph.names_in(e)
    assigned = {n for n, _ in (first or step).assigns}
    for _, e in step.equations():  # a state no layer assigns, read by the later layers: still its start
        reads |= graph.names_in(e) - assigned
    reads |= graph.names_in(output_expr)
    # the output stays at its start where no first layer assigns it (one that does makes the start dead)
    starts = tuple(d.name for d in p.states if d.name in reads or (d.name == p.output and d.name not in assigned))
    first, step, all_layers = all_layer_products(p, ns, first, step)
    read = graph.names_in(output_expr)
    for _, e in (first.equations() if first is not None else ()) + step.equations():
        read |= graph.names_in(e)
    for name in layer_lets:  # a let of a per-layer value (ADMM's A of rho[k]) reads the layer's copy
        read |= graph.names_in(p.decl(name).value)
    copies = tuple(n for n in per_layer if n in read)  # not those read only as one batched product
    layer_let_values, let_products = hoist_let_products(p, ns, list(layer_lets), varying)
    trace = ns.fresh(f"{p.output}s")
    (first, step), shared = share_repeated(ns, [first, step])  # named last: no other name moves
    return Plan(kind="unrolled", starts=starts, first=first, step=step, hoisted=tuple(hoisted),
                all_layers=all_layers, let_products=tuple(let_products), layer_let_values=layer_let_values,
                copies=copies, trace=trace, shared=tuple(shared), **common)


def _plan_fixed_point(p: Program, ns, common: dict, step: Step, hoisted, output_expr) -> Plan:
    implicit = p.backward == "implicit"
    if any(e.has(atoms.LAYER) for _, e in step.equations()):  # softss: its share grows with the layer
        raise DpcError("the update reads the layer number (support selection's share grows with it), and "
                       "`unroll until` has no layers, only iterations to a fixed point",
                       p.span_of_directive("unroll"), "write `unroll N` for N layers, or drop `adapt support`"
                       ).with_source(p.source)
    names = [d.name for d in p.states]
    iterate = ns.fresh("iterate")
    # an output that reads the update's temporaries is computed inside the update, and kept per sample
    # like a state (a converged sample keeps it too)
    temps = {n for n, _ in step.lets}
    output_reads = graph.names_in(output_expr) if output_expr is not None else {p.output}
    carried = ns.fresh(p.output) if output_reads & temps else None
    if implicit and carried:
        raise DpcError("backward implicit returns the fixed point: output the var or an expression of it, "
                       "not a temporary of the update", p.span_of_directive("output")
                       or p.span_of_directive("backward")).with_source(p.source)
    fixed_point = FixedPoint(p.until, implicit, iterate, carried, ns.fresh("info"), ns.fresh("report"),
                             ns.fresh("history"), ns.fresh("last_info"))
    trace = ns.fresh(f"{p.output}s")
    (step,), shared = share_repeated(ns, [step])  # named last: no other name moves
    return Plan(kind="fixed point", starts=tuple(names), first=None, step=step, hoisted=tuple(hoisted),
                trace=trace, fixed_point=fixed_point, shared=tuple(shared), **common)


def _learned_checks(p: Program, ns, kept: list, per_layer: set) -> LearnedChecks | None:
    """The learned requirements and cautions forward checks (LearnedChecks); those reading a per-layer value
    are left to the parametrisation (one check a layer is not worth its cost)."""
    from dpc.requirements import learned_names, learned_requirements
    learned = learned_names(p)
    trainable = {d.name for d in p.decls if d.trainable}
    checks = [(r, False, r in kept) for r in learned_requirements(p)]
    checks += [(r, True, False) for r in p.cautions if graph.names_in(r.expr) & learned]
    checks = [c for c in checks if not _reads(p, c[0].expr) & per_layer]
    if not checks:
        return None
    tensors = sorted({n for r, _, _ in checks for n in _reads(p, r.expr) & trainable},
                     key=lambda n: [d.name for d in p.decls].index(n))
    return LearnedChecks(tuple(checks), tuple(tensors), ns.fresh("check_learned"), ns.fresh("_checked"),
                         ns.fresh("_opnorm_cache"), ns.fresh("_cautioned"), ns.fresh("stamp"), ns.fresh("opnorms"))


def _reads(p: Program, expr) -> set[str]:
    """The names expr reads, through the lets it reads."""
    todo, seen = list(graph.names_in(expr)), set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            if p.has(name) and p.decl(name).kind == "let":
                todo += list(graph.names_in(p.decl(name).value))
    return seen


def _simplified(expr):
    """sp.simplify(expr), or expr where sympy fails on it: its factor_terms rebuilds a MatAdd inside an atom
    (opnorm(M) of a step bound beside a constraint) as a sum of matrix and scalar terms ("Mix of Matrix and
    Scalar symbols")."""
    try:
        return sp.simplify(expr)
    except TypeError:
        return expr


def _constrained(p: Program, ns, kept: list | None = None) -> dict:
    """The learned scalar hypers with a requirement (dpc.requirements.learned_requirements): a sign (expr a
    positive multiple of the hyper: > 0 or >= 0) is kept by log(1 + exp(raw)); a requirement linear in the hyper that
    also reads other values (a step bound) by a clamp, on the last-declared learned hyper it reads."""
    from dpc.requirements import default_number, learned_requirements
    hypers = [d for d in p.of_kind("hyper") if d.trainable and not d.shape]
    order = {d.name: i for i, d in enumerate(hypers)}
    found: dict = {}
    for req in learned_requirements(p):
        if req.relation not in ("positive", "nonnegative"):
            continue
        names = [n for n in graph.names_in(req.expr) if n in order]
        if not names:
            continue
        name = max(names, key=order.get)
        symbol = p.decl(name).symbol
        try:
            slope = sp.diff(req.expr, symbol)
        except NotImplementedError:  # the hyper inside opnorm(...): not linear in it, nothing to clamp
            continue
        entry = found.setdefault(name, {"relation": None, "why": [], "bounds": []})
        ratio = _simplified(req.expr / symbol)
        if ratio.is_number and ratio.is_positive:
            if entry["relation"] != "positive":
                entry["relation"] = req.relation
            entry["why"].append(req.why)
            if kept is not None:
                kept.append(req)
            continue
        if slope.has(symbol) or not slope.free_symbols.isdisjoint({symbol}):
            continue  # not linear in it
        sign = _sign(p, slope)
        if sign is None:
            continue
        bound = _simplified(-req.expr.subs(symbol, 0) / slope)
        entry["bounds"].append(Bound(bound, sign < 0, req.relation == "positive", req.why))
        if kept is not None:
            kept.append(req)
    return {name: Constrained(ns.fresh(f"{name}_raw"), e["relation"], "; ".join(e["why"]), tuple(e["bounds"]))
            for name, e in sorted(found.items(), key=lambda kv: order[kv[0]])
            if e["relation"] is not None or e["bounds"]}


def _sign(p: Program, expr) -> int | None:
    """The sign of a scalar: at the defaults where that is a number, else with every norm, let and param
    taken as positive (opnorm(D)^2, L) and the hypers at their defaults; None when neither decides."""
    from dpc.requirements import default_number
    value = default_number(p, expr)
    if value is not None:
        return (value > 0) - (value < 0) or None
    hypers = {d.symbol: d.value for d in p.of_kind("hyper")}
    expr = expr.xreplace(hypers)
    scalars = [n for n in sp.preorder_traversal(expr) if not isinstance(n, (sp.Number, sp.Add, sp.Mul, sp.Pow))
               and not getattr(n, "is_Matrix", False) and n.free_symbols]
    expr = expr.xreplace({n: sp.Dummy(positive=True) for n in scalars if not n.is_Symbol or n in expr.free_symbols})
    return 1 if expr.is_positive else -1 if expr.is_negative else None


def _lets_for_layer(p: Program, step: Step, layer_lets) -> list[str]:
    frontier = set()
    for _, e in step.equations():
        frontier |= graph.names_in(e)
    for d in p.of_kind("output"):
        frontier |= graph.names_in(d.value)
    wanted: set[str] = set()
    while frontier:
        name = frontier.pop()
        if name in layer_lets and name not in wanted:
            wanted.add(name)
            frontier |= graph.names_in(p.decl(name).value)
    return [n for n in layer_lets if n in wanted]


def _unread_by_first_layer(p: Program, listed, layer_lets) -> set[str]:
    """The listed per-layer values that the first layer does not read (fold start: it starts from z = 0,
    so S @ z folded away)."""
    first = p.first_step
    if first is None or p.until is not None or not listed:
        return set()
    read = set()
    for _, e in first.equations():
        read |= graph.names_in(e)
    for name in _lets_for_layer(p, first, layer_lets):  # the output expression's names included
        read |= graph.names_in(p.decl(name).value)
    for d in p.of_kind("output"):
        read |= graph.names_in(d.value)
    return {name for name in listed if name not in read}


def _read_outside_layers(p: Program, objective: bool) -> set[str]:
    """Names read by the vars' starts (and the objective), directly or through lets."""
    frontier = graph.names_in(p.objective) if objective else set()
    for d in p.states:
        frontier |= graph.names_in(d.value)
    seen: set[str] = set()
    while frontier:
        name = frontier.pop()
        if name not in seen:
            seen.add(name)
            if p.has(name) and p.decl(name).kind == "let":
                frontier |= graph.names_in(p.decl(name).value)
    return seen


def _init_tensors(p: Program) -> set[str]:
    """Names whose value is a tensor in __init__ (else a Python float): params, weights, and what uses them;
    a learned hyper is still the float it was given there (its nn.Parameter is self.NAME)."""
    out = {d.name for d in p.decls if d.kind in ("param", "weight", "input", "var", "temp")
           or (d.trainable and d.kind != "hyper")}
    for name in graph.ordered(p, ("let",)):
        if graph.names_in(p.decl(name).value) & out or p.decl(name).shape:
            out.add(name)
    return out


def _init_lets(p: Program, fixed_lets) -> list[str]:
    """Lets computed in __init__: the fixed ones, and any that a learned weight's initial value reads
    (with `learn D`, L = opnorm(D)^2 is recomputed in forward but W starts at D.T / L)."""
    wanted = set(fixed_lets)
    weights = p.of_kind("weight")
    frontier = set().union(*(graph.names_in(w.value) for w in weights)) if weights else set()
    lets = {d.name for d in p.of_kind("let")}
    while frontier:
        name = frontier.pop()
        if name in lets and name not in wanted:
            wanted.add(name)
            frontier |= graph.names_in(p.decl(name).value)
    return [n for n in graph.ordered(p, ("let",)) if n in wanted]


def _solved_constants(p: Program, trainable_deps, layer_lets) -> list[str]:
    """Lets computed once at construction that forward uses as the matrix of a solve(A, b)."""
    exprs = [e for _, e in p.closed_form]
    for step in (p.first_step, p.step):
        if step is not None:
            exprs += [e for _, e in step.equations()]
    exprs += [d.value for d in p.of_kind("output") if d.value is not None]
    solved = {s.args[0].name for e in exprs for s in e.atoms(atoms.Solve) if isinstance(s.args[0], sp.MatrixSymbol)}
    return [d.name for d in p.of_kind("let") if d.name in solved and len(d.shape) == 2
            and d.name not in trainable_deps and d.name not in layer_lets]


def _refuse_per_sample_matrices(p: Program):
    """The generated code holds a batch of vectors as (batch, n) and a matrix once for the whole batch:
    a matrix that differs per sample (abs(bentropy(sigmoid(z)) * C), s * C + D with s per sample) has
    no layout there. A DpcError at the update or the objective, not a shape error at run time."""
    per_sample = {d.name for d in p.decls if d.kind in ("input", "var", "temp", "output")}
    scalar_states = [d.name for d in p.states if not d.shape]
    matrix_states = [d.name for d in p.states if len(d.shape) >= 2]
    if p.until is not None and scalar_states and matrix_states:
        # under `unroll until` a scalar state is one per sample ((batch, 1)): FISTA's t next to matrix states
        raise DpcError(f"unroll until keeps the scalar state {scalar_states[0]} per sample, and a per-sample "
                       f"scalar cannot scale the matrix state {matrix_states[0]} (a (batch, m, n) tensor) yet",
                       p.span_of_directive("unroll") or p.span_of_directive("update"),
                       "run a fixed number of layers (unroll 100), or derive proxgrad (no scalar state)"
                       ).with_source(p.source)
    # a matrix input, var or temporary is a (batch, m, n) tensor: what is built from it is one too, unless a
    # scalar that differs per sample scales it (a (batch, 1) tensor does not broadcast against (batch, m, n))
    matrices = {d.name for d in per_sample_decls(p) if len(d.shape) >= 2}  # R[c, h, w] too
    batched = _batched_names(p)
    places = [("update", e) for step in (p.first_step, p.step) if step is not None for _, e in step.equations()]
    places += [("update", e) for _, e in p.closed_form]
    places += [("output", d.value) for d in p.of_kind("output") if d.value is not None]
    if p.objective is not None:
        places.append(("minimize", p.objective))
    for where, expr in places:
        for node in sp.preorder_traversal(expr):
            shape = getattr(node, "shape", None)
            if isinstance(node, sp.MatrixExpr) and shape and shape[0] != 1 and shape[1] != 1 \
                    and graph.names_in(node) & per_sample and not _batched_matrix(node, matrices, batched):
                span = p.span_of_directive(where) if where != "minimize" else \
                    (p.term_spans[0][1] if p.term_spans else None)
                scalar = _per_sample_scalar(node, batched)
                if graph.names_in(node) & matrices and scalar is not None:
                    raise DpcError(f"{math(node)} is a matrix per sample with a scalar that differs per sample "
                                   f"in it ({math(scalar)}); the generated code has no layout for a per-sample "
                                   "scalar against a per-sample matrix", span,
                                   "make that scalar the same for every sample: a hyper, a param or a let of "
                                   "them (or apply it to a vector)").with_source(p.source)
                raise DpcError(f"{math(node)} is a matrix that differs from sample to sample; the generated "
                               "code keeps one matrix for the whole batch", span,
                               "apply the per-sample factor to a vector instead, e.g. s * (C @ v)"
                               ).with_source(p.source)


def per_sample_decls(p: Program):
    """Declarations with a value per sample: inputs, vars, temporaries, the output expression."""
    return tuple(d for d in p.decls if d.kind in ("input", "var", "temp", "output"))


def _batched_names(p: Program) -> set[str]:
    """Names with a batch axis: inputs, vector and matrix states, and the temporaries computed from them (a
    scalar state, FISTA's t, is one number for the batch)."""
    out = {d.name for d in p.decls if d.kind in ("input", "var", "output") and d.shape}
    equations = [eq for step in (p.first_step, p.step) if step is not None for eq in step.equations()]
    changed = True
    while changed:
        changed = False
        for name, expr in equations:
            if name not in out and graph.names_in(expr) & out:
                out.add(name)
                changed = True
    return out


def _batched_matrix(node, matrices, batched) -> bool:
    """A matrix built from per-sample matrices ((batch, m, n) tensors) and values the same for every sample,
    with no scalar that differs per sample in it."""
    per_sample = graph.names_in(node) & matrices or any(  # diag of a per-sample vector: (batch, n, n)
        isinstance(sub, atoms.Diag) and graph.names_in(sub) & batched for sub in sp.preorder_traversal(node))
    return bool(per_sample) and _per_sample_scalar(node, batched) is None


def _per_sample_scalar(node, batched):
    """A scalar that differs per sample inside the matrix expression node, scaling a matrix or as an atom's
    scalar argument (soft(X, sqnorm(X)), svt(L, norm1(S))), or None: a per-sample scalar is a (batch, 1)
    tensor, which does not broadcast against a (batch, m, n) one."""
    for sub in sp.preorder_traversal(node):
        if isinstance(sub, sp.MatMul):
            coeff, _ = sub.as_coeff_matrices()
            if graph.names_in(coeff) & batched:
                return coeff
        elif isinstance(sub, sp.MatrixExpr):
            for arg in sub.args:
                if not isinstance(arg, sp.MatrixExpr) and isinstance(arg, sp.Expr) and not arg.is_number \
                        and graph.names_in(arg) & batched:
                    return arg
    return None
