"""The network as a picture (.svg, .png) with matplotlib, laid out in layers.

Graphviz would lay it out itself, but its `dot` binary is not a Python package; matplotlib is.
The layout is network_graph's grid: column 0 holds what exists once (inputs, starts, tied
parameters), column k layer k; rows put parameters on top, states in the middle, inputs below.
So a tied weight is one node fanning out to every layer and an untied one is a row of copies.
matplotlib is imported here, when a picture is asked for, never when dpc starts.
"""
from __future__ import annotations

import networkx as nx

from dpc.errors import DpcError

NODE_SIZE = 1300  # points^2: room for a label such as theta₁₆ at FONT_SIZE
FONT_SIZE = 7
COLUMN_WIDTH = 1.35  # inches between layers
ROW_HEIGHT = 0.85    # inches between rows

# role -> (marker, face colour, legend text); the colours match dot.STYLE
LOOK = {
    "input": ("s", "#c7e9c0", "input"),
    "start": ("o", "#eeeeee", "start value"),
    "state": ("o", "#c6dbef", "state after a layer"),
    "param": ("D", "#fdd0a2", "learned, one copy per layer (untied)"),
    "tied": ("D", "#fb6a4a", "learned, one copy shared by all layers (tied)"),
}
EDGE_COLOUR = {"state": "#333333", "input": "#41ab5d", "param": "#d94801"}


def _look(data) -> str:
    return "tied" if data["role"] == "param" and data.get("tied") else data["role"]


def _matplotlib():
    try:
        import matplotlib
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
    except ImportError:
        raise DpcError("drawing a picture needs matplotlib, which is not installed",
                       hint="pip install 'dpc[graph]', or write .dot (no dependencies) and render it with Graphviz"
                       ) from None
    return matplotlib, Figure, Line2D


def draw(g: nx.DiGraph, path: str, fmt: str) -> None:
    """Write the picture of network_graph's graph to `path` as `fmt` (svg or png)."""
    matplotlib, Figure, Line2D = _matplotlib()
    pos = {n: (d["column"] * COLUMN_WIDTH, -d["row"] * ROW_HEIGHT) for n, d in g.nodes(data=True)}
    columns = max(d["column"] for _, d in g.nodes(data=True)) + 1
    rows = max(d["row"] for _, d in g.nodes(data=True)) + 1
    width, height = max(6.0, COLUMN_WIDTH * columns + 1.5), max(3.5, ROW_HEIGHT * rows + 2.2)
    # a fixed hash salt and no date: the same program gives the same bytes, as `dpc compile` does
    with matplotlib.rc_context({"svg.hashsalt": "dpc", "font.size": FONT_SIZE}):
        fig = Figure(figsize=(width, height))
        ax = fig.add_axes((0.01, 0.01, 0.98, 0.98 - 0.9 / height))
        ax.set_axis_off()
        _draw_edges(g, pos, ax)
        handles = _draw_nodes(g, pos, ax, Line2D)
        nx.draw_networkx_labels(g, pos, {n: d["label"] for n, d in g.nodes(data=True)}, ax=ax, font_size=FONT_SIZE)
        top = ROW_HEIGHT * 0.8
        for column in g.graph["columns"]:
            ax.text(column.index * COLUMN_WIDTH, top, column.title, ha="center", va="bottom", color="#555555")
        ax.set_xlim(-COLUMN_WIDTH * 0.6, COLUMN_WIDTH * (columns - 0.4))
        ax.set_ylim(-ROW_HEIGHT * (rows - 0.4), top + ROW_HEIGHT * 0.6)
        fig.suptitle(_title(g), fontsize=FONT_SIZE + 3)
        ax.legend(handles=handles, loc="lower right", fontsize=FONT_SIZE, frameon=False,
                  bbox_to_anchor=(1.0, 1.0 - 0.25 / height), ncol=len(handles))
        metadata = {"Date": None} if fmt == "svg" else {}
        try:
            fig.savefig(path, format=fmt, metadata=metadata)
        except OSError as err:  # no such folder, no permission, a directory
            raise DpcError(f"cannot write {path}: {err.strerror or err}", hint="choose another path with -o") from None


def _draw_edges(g, pos, ax) -> None:
    """The state chain with arrowheads; inputs and parameters as thin lines without (they only feed),
    an untied copy's lines bowed so that W's line to z passes beside S and theta, not under them.
    Added as artists, not through ax.add_patch: the axes' limits are set by hand, and updating them
    a curved patch at a time took most of a drawing's time."""
    from matplotlib.collections import LineCollection
    from matplotlib.patches import FancyArrowPatch
    radius = NODE_SIZE ** 0.5 / 2  # points: lines start and end at a node's rim, not its centre
    straight: dict[str, list] = {}
    for a, b, d in g.edges(data=True):
        kind = d.get("kind", "state")
        chain, bowed = kind == "state", kind == "param" and not g.nodes[a].get("tied")
        if not (chain or bowed):  # a fan from an input or a tied value: plain segments, one collection
            straight.setdefault(kind, []).append((pos[a], pos[b]))
            continue
        ax.add_artist(FancyArrowPatch(pos[a], pos[b], arrowstyle="-|>" if chain else "-", mutation_scale=9,
                                      connectionstyle="arc3,rad=0.35" if bowed else "arc3",
                                      shrinkA=radius, shrinkB=radius, color=EDGE_COLOUR[kind],
                                      linewidth=0.9 if chain else 0.6, alpha=1.0 if chain else 0.45, zorder=1))
    for kind, segments in sorted(straight.items()):
        ax.add_collection(LineCollection(segments, colors=EDGE_COLOUR[kind], linewidths=0.6, alpha=0.45, zorder=1),
                          autolim=False)


def _draw_nodes(g, pos, ax, Line2D) -> list:
    """Each kind of node in its marker and colour; the legend's handles for the kinds present."""
    handles = []
    for look, (marker, colour, text) in LOOK.items():
        nodes = [n for n, d in g.nodes(data=True) if _look(d) == look]
        if not nodes:
            continue
        outline = [2.5 if g.nodes[n].get("output") else 0.8 for n in nodes]  # the network's output: thick
        nx.draw_networkx_nodes(g, pos, nodelist=nodes, ax=ax, node_shape=marker, node_color=colour,
                               node_size=NODE_SIZE, edgecolors="#333333", linewidths=outline)
        if look == "tied" and g.graph["layers"] == 1:
            text = "learned"  # one layer: nothing to share
        handles.append(Line2D([], [], marker=marker, linestyle="", markersize=8, markerfacecolor=colour,
                              markeredgecolor="#333333", label=text))
    return handles


def _title(g) -> str:
    count = g.graph["layers"]
    tying = {True: ", tied", False: ", untied"}.get(g.graph.get("tied"), "")
    return f"{g.graph['name']}: {count} layer{'s' if count != 1 else ''}{tying}"
