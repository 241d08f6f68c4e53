"""The network as Graphviz DOT text, written here so .dot needs neither pydot nor the dot binary.

`dot -Tsvg net.dot` lays it out left to right: what exists once (inputs, starts, tied parameters)
first, then one cluster a layer holding its states and its own parameter copies (the collapsed middle
layers one cluster titled `layers 2–15 (× 14)`).
"""
from __future__ import annotations

import networkx as nx

# role -> node attributes; a tied parameter differs from an untied one in colour and outline
STYLE = {
    "input": 'shape=box, style=filled, fillcolor="#c7e9c0"',
    "start": 'shape=ellipse, style=filled, fillcolor="#eeeeee"',
    "state": 'shape=ellipse, style=filled, fillcolor="#c6dbef"',
    "param": 'shape=diamond, style=filled, fillcolor="#fdd0a2"',
    "tied": 'shape=diamond, style="filled,bold", fillcolor="#fb6a4a", penwidth=2',
    "operator": 'shape=box, style="filled,rounded", fillcolor="#dadaeb"',
}
EDGE_STYLE = {"state": "", "input": 'color="#41ab5d"', "param": 'color="#d94801"', "operator": 'color="#6a51a3"'}


def quote(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _style(data) -> str:
    role = "tied" if data["role"] == "param" and data.get("tied") else data["role"]
    out = STYLE[role]
    if data.get("output"):
        out += ", peripheries=2"
    return out


def _node(node, data) -> str:
    return f"{quote(node)} [label={quote(data['label'])}, {_style(data)}];"


def to_dot(g: nx.DiGraph) -> str:
    """DOT text for network_graph's graph; deterministic (nodes and edges in the graph's order)."""
    count = g.graph["layers"]
    tying = {True: ", tied", False: ", untied"}.get(g.graph.get("tied"), "")
    title = f"{g.graph['name']}: {count} layer{'s' if count != 1 else ''}{tying}"
    lines = [f"digraph {quote(g.graph['name'])} {{",
             "  rankdir=LR;",
             f"  label={quote(title)}; labelloc=t;",
             '  node [fontname="Helvetica"]; edge [arrowsize=0.6];']
    by_column: dict[int, list[str]] = {}
    for node, data in g.nodes(data=True):
        by_column.setdefault(data["column"], []).append(node)
    titles = {c.index: c.title + (f" (× {c.repeat})" if c.repeat > 1 else "") for c in g.graph["columns"]}
    for column in sorted(by_column):
        if column == 0:  # what every layer shares stays outside the layers' boxes
            lines += [f"  {_node(n, g.nodes[n])}" for n in by_column[column]]
            continue
        lines.append(f"  subgraph {quote(f'cluster_{column}')} {{")
        lines.append(f"    label={quote(titles.get(column, ''))}; style=rounded; color=\"#bbbbbb\";")
        lines += [f"    {_node(n, g.nodes[n])}" for n in by_column[column]]
        lines.append("  }")
    for a, b, data in g.edges(data=True):
        style = EDGE_STYLE[data.get("kind", "state")]
        lines.append(f"  {quote(a)} -> {quote(b)}{f' [{style}]' if style else ''};")
    lines.append("}")
    return "\n".join(lines) + "\n"
