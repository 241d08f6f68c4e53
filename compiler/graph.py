"""The network as networkx graphs.

dataflow(program): which declared value feeds which (lets, weight initial values,
starts, the update's equations). Its topological order is the order values are
computed in; descendants of a trainable value are what must be recomputed in forward.

layers(program): the unrolled network: one node per state per layer and per parameter
copy; an untied weight has one node per layer, a tied one a single node shared by
every layer. Tests read parameter sharing from it; it grows with the unroll count, so
`dpc explain` reports sharing with sharing_summary, which counts without building it.
"""
from __future__ import annotations

import networkx as nx

from dpc.ir import Program


def names_in(expr) -> set[str]:
    if expr is None:
        return set()
    return {s.name for s in expr.free_symbols if hasattr(s, "name")}


def dataflow(program: Program) -> nx.DiGraph:
    g = nx.DiGraph()
    for d in program.decls:
        g.add_node(d.name, kind=d.kind, trainable=d.trainable)
    for d in program.decls:
        if d.kind in ("let", "weight", "var", "output"):
            for src in names_in(d.value) & set(g.nodes):
                g.add_edge(src, d.name, role="defines")
    return g


def ordered(program: Program, kinds: tuple[str, ...]) -> list[str]:
    """Declared names of these kinds, in an order that computes dependencies first."""
    g = dataflow(program)
    wanted = {d.name for d in program.decls if d.kind in kinds}
    position = {d.name: i for i, d in enumerate(program.decls)}
    order = nx.lexicographical_topological_sort(g, key=lambda n: position[n])
    return [n for n in order if n in wanted]


def depends_on_trainable(program: Program) -> set[str]:
    """Everything computed, directly or not, from a trainable value."""
    g = dataflow(program)
    out: set[str] = set()
    for d in program.decls:
        if d.trainable:
            out |= nx.descendants(g, d.name)
    return out


def per_layer_lets(program: Program) -> list[str]:
    """The lets computed from a value learned per layer (`learn rho untied`), in dependency order: each
    layer computes its own from its copy (with `learn D untied`, L = opnorm(D)^2 is one L per layer)."""
    g = dataflow(program)
    found: set[str] = set()
    for d in program.decls:
        if d.per_layer and d.kind in ("param", "hyper"):
            found |= nx.descendants(g, d.name)
    return [n for n in ordered(program, ("let",)) if n in found]


def step_order(step) -> list[str] | None:
    """An order for the update's assignments in which no state is overwritten before a later
    right-hand side reads its previous value; None when only a simultaneous assignment works."""
    targets = [n for n, _ in step.assigns]
    g = nx.DiGraph()
    g.add_nodes_from(targets)
    for name, expr in step.assigns:
        for read in names_in(expr) & set(targets):
            if read != name:
                g.add_edge(name, read)  # `name` must be computed before `read` is overwritten
    try:
        position = {n: i for i, n in enumerate(targets)}
        return list(nx.lexicographical_topological_sort(g, key=lambda n: position[n]))
    except nx.NetworkXUnfeasible:
        return None


def layers(program: Program, count: int | None = None) -> nx.DiGraph:
    """The unrolled network: (state, k) nodes chained layer to layer, parameters attached."""
    count = count or program.layers or 1
    g = nx.DiGraph()
    states = [d.name for d in program.states]
    weights = [d for d in program.decls if d.kind == "weight" or d.trainable]
    for s in states:
        g.add_node((s, 0), role="start")
    for k in range(1, count + 1):
        step = program.first_step if (k == 1 and program.first_step is not None) else program.step
        for name, expr in (step.assigns if step is not None else ()):
            g.add_node((name, k), role="state", layer=k)
            for read in names_in(expr) | _temp_reads(step, expr):
                if read in states:
                    g.add_edge((read, k - 1), (name, k))
        for w in weights:
            node = ("param", w.name, k) if w.per_layer else ("param", w.name)
            g.add_node(node, role="param", shape=w.shape)
            for s in states:
                if (s, k) in g:
                    g.add_edge(node, (s, k))
    return g


def _temp_reads(step, expr) -> set[str]:
    """Names read through the update's temporaries."""
    temps = dict(step.lets)
    seen, frontier = set(), names_in(expr)
    while frontier:
        name = frontier.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in temps:
            frontier |= names_in(temps[name])
    return seen


def copies(program: Program, decl) -> int:
    """How many copies of a learned value the unrolled network holds: one per layer when untied
    (per_layer), else one shared by every layer -- as layers() has nodes for it, without building it."""
    return (program.layers or 1) if decl.per_layer else 1


def some_tied(program: Program) -> bool:
    """A learn form with `except` made some of its weights shared by all layers and others per layer."""
    copies = {d.per_layer for d in program.of_kind("weight")}
    return program.tied is None and len(copies) == 2


def tying_words(program: Program) -> str:
    """', tied', ', untied', ', W tied; S, theta untied' (learn weights untied except W), or ''."""
    if not some_tied(program):
        return {True: ", tied", False: ", untied", None: ""}[program.tied]
    weights = program.of_kind("weight")
    return (f", {', '.join(d.name for d in weights if not d.per_layer)} tied; "
            f"{', '.join(d.name for d in weights if d.per_layer)} untied")


def sharing_summary(program: Program) -> list[str]:
    """One line per learned value: its copies. Computed from the program, so it costs the same
    for 16 layers as for 10000."""
    out = []
    for d in program.decls:
        if d.kind == "weight" or d.trainable:
            n = copies(program, d)
            out.append(f"{d.name}: {n} {'copies, one per layer' if n > 1 else 'copy, shared by all layers'}")
    return out
