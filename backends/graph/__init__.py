"""Drawings of the unrolled network (`dpc graph`): .dot text, or an .svg/.png picture.

network_graph(program) builds what is drawn (layers, states, inputs, learned values; a tied
value is one node wired to every layer, an untied one a node per layer); to_dot writes it as
DOT; draw renders it with matplotlib, imported only then.
"""
from __future__ import annotations

import os

from dpc.backends.graph.dot import to_dot
from dpc.backends.graph.network import network_graph
from dpc.errors import DpcError

FORMATS = ("svg", "png", "dot")


def drawing_format(path: str) -> str:
    """svg, png or dot, from the path's extension; anything else is the user's to fix."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in FORMATS:
        why = f"'.{ext}' is not a format dpc graph writes" if ext else "the path has no extension"
        raise DpcError(f"cannot draw to {path}: {why}",
                       hint="end the path in .svg, .png or .dot, e.g. -o net.svg")
    return ext


def write_drawing(program, path: str, all_layers: bool = False) -> None:
    """The network of a compiled program, written to path (.svg, .png or .dot; - writes DOT to stdout);
    past three layers the identical middle ones are one block unless `all_layers`."""
    g = network_graph(program, all_layers)
    if path == "-":
        import sys
        sys.stdout.write(to_dot(g))
        return
    fmt = drawing_format(path)
    if fmt == "dot":
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(to_dot(g))
        except OSError as err:
            raise DpcError(f"cannot write {path}: {err.strerror or err}", hint="choose another path with -o") from None
        return
    from dpc.backends.graph.draw import draw
    draw(g, path, fmt)


__all__ = ["FORMATS", "drawing_format", "network_graph", "to_dot", "write_drawing"]
