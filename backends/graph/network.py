"""The drawing's graph: the compiler's unrolled network (dpc.graph.layers) with the inputs added,
each learned value wired only to the states that read it, and a long unroll cut to a summary.

Nodes are strings ("state:z@3", "param:W@3", "param:W", "input:x", "gap:z") so the .dot
text and the picture name them alike. Every node carries:
  role    input | start | state | param | gap
  label   what is written on it: z₃ (z after layer 3), W₃ (layer 3's copy), W (one copy, tied)
  column  0 for what exists once (inputs, starts, tied parameters); layer k's things at its own column
  row     the value's line in the picture: parameters above, states in the middle, inputs below
and params also `tied` (one copy shared by every layer); the output state has `output`.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from dpc.graph import layers, names_in
from dpc.ir import Program

FULL_LAYERS = 24  # up to this many layers every one is drawn
HEAD_LAYERS = 3   # past it: the first three, a gap standing for the rest, the last

_SUBSCRIPT = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


@dataclass(frozen=True)
class Column:
    """A column's heading: `layer 3`, or the gap's `... 9996 layers`."""

    index: int
    title: str


def subscript(name: str, k: int) -> str:
    return name + str(k).translate(_SUBSCRIPT)


def network_graph(program: Program) -> nx.DiGraph:
    """The network to draw; graph attributes: name, layers (the unroll count), tied, columns."""
    count = program.layers or 1
    shown = count if count <= FULL_LAYERS else HEAD_LAYERS + 1
    # layer `shown` stands for the last one when summarised: every layer after the first applies the same
    # step, so layer HEAD_LAYERS + 1 has the last layer's nodes and edges, only its number differs
    number = {k: k for k in range(shown + 1)}
    if shown < count:
        number[shown] = count
    unrolled = layers(program, shown)
    g = nx.DiGraph(name=program.name, layers=count, tied=program.tied)
    learned = [d for d in program.decls if d.kind == "weight" or d.trainable]
    rows = _rows(program, learned)
    _add_states(g, program, unrolled, number, rows)
    _add_closed_form(g, program, rows)
    _add_params(g, program, unrolled, learned, number, rows)
    _add_inputs(g, program, rows)
    if shown < count:
        _add_gap(g, program, count, rows)
    _drop_unused_starts(g)
    if program.output is not None:
        last = _state(program.output, count)
        if last in g:
            g.nodes[last]["output"] = True
    g.graph["columns"] = _columns(count, shown)
    return g


def _columns(count: int, shown: int) -> list[Column]:
    if shown == count:
        return [Column(k, f"layer {k}") for k in range(1, count + 1)]
    hidden = count - HEAD_LAYERS - 1
    return ([Column(k, f"layer {k}") for k in range(1, HEAD_LAYERS + 1)]
            + [Column(HEAD_LAYERS + 1, f"… {hidden} layer{'s' if hidden > 1 else ''} …"),
               Column(HEAD_LAYERS + 2, f"layer {count}")])


def column_of(layer: int, count: int) -> int:
    """The picture's column of a layer: itself, or past the gap column when summarised."""
    if count <= FULL_LAYERS or layer <= HEAD_LAYERS:
        return layer
    return HEAD_LAYERS + 2


def _rows(program: Program, learned) -> dict[str, int]:
    """One row a value: learned values on top, then states, then inputs, each in declaration order."""
    states = [d.name for d in program.states] + [n for n, _ in program.closed_form
                                                 if n not in {d.name for d in program.states}]
    inputs = [d.name for d in program.of_kind("input")]
    names = [d.name for d in learned] + states + inputs
    return {name: i for i, name in enumerate(dict.fromkeys(names))}


def _state(name: str, layer: int) -> str:
    return f"state:{name}@{layer}"


def _param(name: str, layer: int | None) -> str:
    return f"param:{name}" if layer is None else f"param:{name}@{layer}"


def _add_states(g, program, unrolled, number, rows) -> None:
    count = g.graph["layers"]
    for node, data in unrolled.nodes(data=True):
        if data["role"] in ("start", "state"):
            name, k = node
            layer = number[k]
            g.add_node(_state(name, layer), role=data["role"], name=name, layer=layer,
                       label=subscript(name, layer), column=column_of(layer, count), row=rows[name])
    for a, b in unrolled.edges:
        if a[0] != "param":
            g.add_edge(_state(a[0], number[a[1]]), _state(b[0], number[b[1]]), kind="state")


def _add_closed_form(g, program, rows) -> None:
    """A program solved in closed form is one layer: each value computed once from the inputs."""
    for name, _ in program.closed_form:
        g.add_node(_state(name, 1), role="state", name=name, layer=1, label=subscript(name, 1), column=1,
                   row=rows[name])


def _add_params(g, program, unrolled, learned, number, rows) -> None:
    """A learned value's copies as layers() has them (one per layer when untied, one in all when tied),
    each wired to the states that read it: layers() ties a copy to every state of its layer."""
    count = g.graph["layers"]
    for d in learned:
        for node in unrolled.nodes:
            if node[:2] != ("param", d.name):
                continue
            layer = number[node[2]] if len(node) == 3 else None
            g.add_node(_param(d.name, layer), role="param", name=d.name, layer=layer, tied=layer is None,
                       label=d.name if layer is None else subscript(d.name, layer),
                       column=0 if layer is None else column_of(layer, count), row=rows[d.name])
    for state, data in list(g.nodes(data=True)):
        if data["role"] != "state":
            continue
        for name in _reads(program, data["name"], data["layer"]):
            for copy in (_param(name, data["layer"]), _param(name, None)):
                if copy in g:
                    g.add_edge(copy, state, kind="param")


def _add_inputs(g, program, rows) -> None:
    inputs = [d.name for d in program.of_kind("input")]
    for name in inputs:
        g.add_node(f"input:{name}", role="input", name=name, layer=None, label=name, column=0, row=rows[name])
    for state, data in list(g.nodes(data=True)):
        if data["role"] == "state":
            for name in _reads(program, data["name"], data["layer"]) & set(inputs):
                g.add_edge(f"input:{name}", state, kind="input")


def _add_gap(g, program, count, rows) -> None:
    """One `…` a state between layer HEAD_LAYERS and the last, standing for the layers not drawn."""
    for d in program.states:
        before, after = _state(d.name, HEAD_LAYERS), _state(d.name, count)
        if before in g and after in g:
            gap = f"gap:{d.name}"
            g.add_node(gap, role="gap", name=d.name, layer=None, label="…", column=HEAD_LAYERS + 1,
                       row=rows[d.name])
            g.add_edge(before, gap, kind="state")
            g.add_edge(gap, after, kind="state")
    # layers() chained layer HEAD_LAYERS to the last one directly: the gap replaces those edges
    for a, b in [(a, b) for a, b in g.edges if g.nodes[a].get("layer") == HEAD_LAYERS
                 and g.nodes[b].get("layer") == count and g.nodes[a]["role"] == "state"]:
        g.remove_edge(a, b)


def _drop_unused_starts(g) -> None:
    """A start no layer reads (it folded into the first layer, or a closed form has none) is not drawn."""
    g.remove_nodes_from([n for n, d in list(g.nodes(data=True)) if d["role"] == "start" and not g.out_degree(n)])


def _reads(program: Program, state: str, layer: int) -> set[str]:
    """The declared names a state's value at this layer reads: through the step's temporaries and the
    program's lets (kmeansnet's W = 2/tau*C reads the learned C)."""
    step = program.first_step if layer == 1 and program.first_step is not None else program.step
    exprs = dict(program.closed_form)
    if step is not None:
        exprs.update(step.assigns)
    if state not in exprs:
        return set()
    defined = {d.name: d.value for d in program.decls if d.kind == "let"}
    if step is not None:
        defined.update(step.lets)
    seen, frontier = set(), names_in(exprs[state])
    while frontier:
        name = frontier.pop()
        if name not in seen:
            seen.add(name)
            frontier |= names_in(defined.get(name))
    return seen
