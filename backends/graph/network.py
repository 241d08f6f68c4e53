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

SUBSCRIPT = str.maketrans("0123456789k", "₀₁₂₃₄₅₆₇₈₉ₖ")
MIDDLE = "k"  # the collapsed block's layer: its values are labelled z_k, W_k


@dataclass(frozen=True)
class Column:
    """A column's heading: `layer 3`, or the collapsed block's `layers 2–15` with `repeat` 14."""

    index: int
    title: str
    repeat: int = 1


def subscript(name: str, k) -> str:
    return name + str(k).translate(SUBSCRIPT)


def network_graph(program: Program, all_layers: bool = False) -> nx.DiGraph:
    """The network to draw; graph attributes: name, layers (the unroll count), tied, columns.

    Past three layers (unless `all_layers`) the middle ones, which apply the same step, are one block:
    layer 1, the block `layers 2–(T-1)` (x T-2) whose values are labelled z_k, W_k, and layer T."""
    count = program.layers or 1
    collapsed = count > 3 and not all_layers
    shown = 3 if collapsed else count
    number = {k: k for k in range(shown + 1)}
    if collapsed:
        number[2], number[3] = MIDDLE, count
    columns = {n: (k if k <= shown else shown) for k, n in number.items()}
    unrolled = layers(program, shown)
    g = nx.DiGraph(name=program.name, layers=count, tied=program.tied)
    g.graph["column_of"] = columns
    learned = [d for d in program.decls if d.kind == "weight" or d.trainable]
    operators = _operators(program)
    rows = _rows(program, learned, operators)
    _add_states(g, program, unrolled, number, rows)
    _add_closed_form(g, program, rows)
    _add_params(g, program, unrolled, learned, number, rows)
    _add_inputs(g, program, rows)
    _add_operators(g, program, operators, rows)
    _drop_unused_starts(g)
    _label_starts(g, program)
    if program.output is not None:
        last = _state(program.output, count)
        if last in g:
            g.nodes[last]["output"] = True
    g.graph["columns"] = _columns(count, collapsed)
    return g


def _columns(count: int, collapsed: bool) -> list[Column]:
    if not collapsed:
        return [Column(k, f"layer {k}") for k in range(1, count + 1)]
    return [Column(1, "layer 1"), Column(2, f"layers 2–{count - 1}", repeat=count - 2),
            Column(3, f"layer {count}")]


def column_of(g, layer) -> int:
    """The picture's column of a layer: itself, or 2 and 3 for the block and the last when collapsed."""
    return g.graph["column_of"][layer]


def _operators(program: Program) -> list[str]:
    """The operators a layer reads: params not learned and lets of them (G, D, L), not hypers."""
    learned = {d.name for d in program.decls if d.kind == "weight" or d.trainable}
    from dpc.graph import depends_on_trainable
    varying = depends_on_trainable(program) | learned
    candidates = [d.name for d in program.decls if d.kind in ("param", "let") and d.name not in varying]
    read = set()
    for step in (program.step, program.first_step):
        if step is not None:
            for _, e in step.equations():
                read |= names_in(e)
    for _, e in program.closed_form:
        read |= names_in(e)
    return [n for n in candidates if n in read]


def _rows(program: Program, learned, operators=()) -> dict[str, int]:
    """One row a value: learned values on top, operators, then states, then inputs, each in declaration order."""
    states = [d.name for d in program.states] + [n for n, _ in program.closed_form
                                                 if n not in {d.name for d in program.states}]
    inputs = [d.name for d in program.of_kind("input")]
    names = [d.name for d in learned] + list(operators) + states + inputs
    return {name: i for i, name in enumerate(dict.fromkeys(names))}


def _state(name: str, layer) -> str:
    return f"state:{name}@{layer}"


def _param(name: str, layer) -> str:
    return f"param:{name}" if layer is None else f"param:{name}@{layer}"


def _add_states(g, program, unrolled, number, rows) -> None:
    for node, data in unrolled.nodes(data=True):
        if data["role"] in ("start", "state"):
            name, k = node
            layer = number[k]
            g.add_node(_state(name, layer), role=data["role"], name=name, layer=layer,
                       label=subscript(name, layer), column=column_of(g, layer), row=rows[name])
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
    for d in learned:
        for node in unrolled.nodes:
            if node[:2] != ("param", d.name):
                continue
            layer = number[node[2]] if len(node) == 3 else None
            g.add_node(_param(d.name, layer), role="param", name=d.name, layer=layer, tied=layer is None,
                       label=d.name if layer is None else subscript(d.name, layer),
                       column=0 if layer is None else column_of(g, layer), row=rows[d.name])
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


def _add_operators(g, program, operators, rows) -> None:
    """Each operator once, in the first column, wired to the states whose update reads it directly."""
    for name in operators:
        g.add_node(f"operator:{name}", role="operator", name=name, layer=None, label=name, column=0,
                   row=rows[name])
    for state, data in list(g.nodes(data=True)):
        if data["role"] == "state":
            for name in _direct_reads(program, data["name"], data["layer"]) & set(operators):
                g.add_edge(f"operator:{name}", state, kind="operator")


def _label_starts(g, program) -> None:
    """A start's node says where it comes from (z₀ = 0, z₀ = f), wired to the inputs it reads."""
    from dpc.printing import math
    inputs = {d.name for d in program.of_kind("input")}
    for node, data in list(g.nodes(data=True)):
        if data["role"] != "start":
            continue
        decl = program.decl(data["name"])
        value = "0" if decl.value is None else math(decl.value)
        if len(value) > 18:
            value = value[:17] + "…"
        data["label"] = f"{data['label']} = {value}"
        for name in names_in(decl.value) & inputs:
            if f"input:{name}" in g:
                g.add_edge(f"input:{name}", node, kind="input")


def _direct_reads(program: Program, state: str, layer) -> set[str]:
    """The declared names a state's update reads, through the step's temporaries but not through lets."""
    step = program.first_step if layer == 1 and program.first_step is not None else program.step
    exprs = dict(program.closed_form)
    if step is not None:
        exprs.update(step.assigns)
    if state not in exprs:
        return set()
    temps = dict(step.lets) if step is not None else {}
    seen, frontier = set(), names_in(exprs[state])
    while frontier:
        name = frontier.pop()
        if name not in seen:
            seen.add(name)
            frontier |= names_in(temps.get(name))
    return seen


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
