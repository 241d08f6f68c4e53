"""The network as a picture (.svg, .png) with matplotlib, laid out in layers.

Graphviz would lay it out itself, but its `dot` binary is not a Python package; matplotlib is.
The layout is network_graph's grid: column 0 holds what exists once (inputs, starts, operators, tied
parameters), column k layer k (or, collapsed, layer 1, the block of identical middle layers, the last);
rows put parameters on top, then operators, states in the middle, inputs below. Every label is set at
FONT_SIZE points in a box that fits it, at DPI: a deeper network makes a wider figure, never smaller text.
matplotlib is imported here, when a picture is asked for, never when dpc starts.
"""
from __future__ import annotations

import networkx as nx

from dpc.errors import DpcError

FONT_SIZE = 11       # points, at any depth
DPI = 100            # a .png's pixels per inch: 11 pt is 15 px
CHAR_WIDTH = 0.095   # inches a label character takes at FONT_SIZE (a conservative average)
COLUMN_GAP = 0.9     # inches between the widest labels of neighbouring columns
ROW_HEIGHT = 0.62    # inches between rows
MAX_PIXELS = 2 ** 16 - 1  # matplotlib's (Agg's) limit on a .png's side

# role -> (box style, face colour, legend text); the colours match dot.STYLE
LOOK = {
    "input": ("square", "#c7e9c0", "input"),
    "start": ("round", "#eeeeee", "start value"),
    "operator": ("square", "#dadaeb", "operator (param, let)"),
    "state": ("round", "#c6dbef", "state after a layer"),
    "param": ("sawtooth", "#fdd0a2", "learned, one copy per layer (untied)"),
    "tied": ("sawtooth", "#fb6a4a", "learned, one copy shared by all layers (tied)"),
}
EDGE_COLOUR = {"state": "#333333", "input": "#41ab5d", "param": "#d94801", "operator": "#6a51a3"}


def _look(data) -> str:
    return "tied" if data["role"] == "param" and data.get("tied") else data["role"]


def _matplotlib():
    try:
        import matplotlib
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError:
        raise DpcError("drawing a picture needs matplotlib, which is not installed",
                       hint="pip install 'dpc[graph]', or write .dot (no dependencies) and render it with Graphviz"
                       ) from None
    return matplotlib, Figure, Patch


def layout(g: nx.DiGraph) -> tuple[dict, list[float], float, float]:
    """Node positions in inches, each column's x, and the figure's width and height: a column is as wide
    as its longest label (or title) needs."""
    columns = max(d["column"] for _, d in g.nodes(data=True)) + 1
    rows = max(d["row"] for _, d in g.nodes(data=True)) + 1
    widest = [1.0] * columns
    for _, d in g.nodes(data=True):
        widest[d["column"]] = max(widest[d["column"]], CHAR_WIDTH * len(d["label"]) + 0.3)
    for c in g.graph["columns"]:
        widest[c.index] = max(widest[c.index], CHAR_WIDTH * len(_column_title(c)) * 0.9)
    xs, x = [], 0.6
    for w in widest:
        xs.append(x + w / 2)
        x += w + COLUMN_GAP
    width = max(6.0, x - COLUMN_GAP + 0.6)
    height = max(3.0, ROW_HEIGHT * rows + 2.0)
    pos = {n: (xs[d["column"]], height - 1.35 - d["row"] * ROW_HEIGHT) for n, d in g.nodes(data=True)}
    return pos, xs, width, height


def _column_title(column) -> str:
    return column.title + (f"  (× {column.repeat})" if column.repeat > 1 else "")


def draw(g: nx.DiGraph, path: str, fmt: str) -> None:
    """Write the picture of network_graph's graph to `path` as `fmt` (svg or png)."""
    matplotlib, Figure, Patch = _matplotlib()
    pos, xs, width, height = layout(g)
    if fmt == "png" and max(width, height) * DPI > MAX_PIXELS:
        raise DpcError(f"cannot draw {path}: {g.graph['layers']} layers drawn one by one are "
                       f"{int(width * DPI)} pixels wide, past a .png's {MAX_PIXELS}",
                       hint="drop --all (the middle layers are one block), or write .svg or .dot")
    # a fixed hash salt and no date: the same program gives the same bytes, as `dpc compile` does
    with matplotlib.rc_context({"svg.hashsalt": "dpc", "font.size": FONT_SIZE}):
        fig = Figure(figsize=(width, height), dpi=DPI)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        ax.set_xlim(0, width)
        ax.set_ylim(0, height)
        _draw_blocks(g, xs, height, ax)
        boxes = _draw_nodes(g, pos, ax)
        _draw_edges(g, pos, boxes, ax)
        for column in g.graph["columns"]:
            ax.text(xs[column.index], height - 0.85, _column_title(column), ha="center", va="bottom",
                    color="#555555", fontsize=FONT_SIZE)
        ax.text(0.3, height - 0.3, _title(g), ha="left", va="top", fontsize=FONT_SIZE + 2, weight="bold")
        present = {_look(d) for _, d in g.nodes(data=True)}
        handles = [Patch(facecolor=colour, edgecolor="#333333", label=_legend(g, look, text))
                   for look, (_, colour, text) in LOOK.items() if look in present]
        fig.legend(handles=handles, loc="lower left", fontsize=FONT_SIZE, frameon=False,
                   ncol=min(len(handles), max(1, int(width // 3.2))), bbox_to_anchor=(0.01, 0.0))
        metadata = {"Date": None} if fmt == "svg" else {}
        try:
            fig.savefig(path, format=fmt, metadata=metadata, dpi=DPI)
        except OSError as err:  # no such folder, no permission, a directory
            raise DpcError(f"cannot write {path}: {err.strerror or err}", hint="choose another path with -o") from None


def _legend(g, look, text) -> str:
    return "learned" if look == "tied" and g.graph["layers"] == 1 else text


def _draw_blocks(g, xs, height, ax) -> None:
    """The collapsed middle layers: a shaded box behind their column, titled with how many it stands for."""
    from matplotlib.patches import FancyBboxPatch
    for column in g.graph["columns"]:
        if column.repeat > 1:
            left = xs[column.index] - (xs[column.index] - xs[column.index - 1]) / 2 + 0.2
            right = xs[column.index] + (xs[column.index + 1] - xs[column.index]) / 2 - 0.2 \
                if column.index + 1 < len(xs) else xs[column.index] + 1.0
            ax.add_patch(FancyBboxPatch((left, 1.0), right - left, height - 1.9, boxstyle="round,pad=0.05",
                                        facecolor="#f4f4f4", edgecolor="#999999", linestyle="--", zorder=0))


def _draw_nodes(g, pos, ax) -> dict:
    """Each node's label in a box of its kind's colour; the boxes, for the edges to end at."""
    boxes = {}
    for node, d in g.nodes(data=True):
        style, colour, _ = LOOK[_look(d)]
        pad = "round,pad=0.35" if style == "round" else ("square,pad=0.35" if style == "square" else "sawtooth,pad=0.35")
        x, y = pos[node]
        text = ax.text(x, y, d["label"], ha="center", va="center", fontsize=FONT_SIZE, zorder=3,
                       bbox=dict(boxstyle=pad, facecolor=colour, edgecolor="#333333",
                                 linewidth=2.5 if d.get("output") else 0.8))
        boxes[node] = text
    return boxes


def _draw_edges(g, pos, boxes, ax) -> None:
    """The state chain with arrowheads, the rest as thin arrows; each ends at its nodes' boxes. An edge
    between nodes in one column (a start's input) bows so that it passes beside the nodes between."""
    from matplotlib.patches import FancyArrowPatch
    for a, b, d in g.edges(data=True):
        kind = d.get("kind", "state")
        chain = kind == "state"
        same_column = g.nodes[a]["column"] == g.nodes[b]["column"]
        bowed = same_column or (kind == "param" and not g.nodes[a].get("tied"))
        ax.add_patch(FancyArrowPatch(pos[a], pos[b], arrowstyle="-|>", mutation_scale=10 if chain else 7,
                                     connectionstyle="arc3,rad=0.3" if bowed else "arc3",
                                     patchA=boxes[a].get_bbox_patch(), patchB=boxes[b].get_bbox_patch(),
                                     color=EDGE_COLOUR[kind], linewidth=1.0 if chain else 0.7,
                                     alpha=1.0 if chain else 0.55, zorder=2))


def _title(g) -> str:
    count = g.graph["layers"]
    tying = {True: ", tied", False: ", untied"}.get(g.graph.get("tied"), "")
    return f"{g.graph['name']}: {count} layer{'s' if count != 1 else ''}{tying}"
