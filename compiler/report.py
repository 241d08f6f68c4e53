"""`dpc explain FILE.dp --html OUT.html`: one self-contained page (nothing fetched to view it).

The source with highlighting (Pygments, when installed: the `test`/`report` extras), each pass's notes and
changes as MathML (latex2mathml, the `report` extra; browsers and Jupyter render MathML themselves, no
script or font needed), the drawing of the network (inline SVG, with matplotlib), the learned values (shape,
copies, initial value) and the generated module's signature. Without latex2mathml the math is dpc's plain
text; without matplotlib the page says how to get the drawing. Imported only by `dpc explain --html` and
by Explanation's notebook display, never by `dpc compile`.
"""
from __future__ import annotations

import html
import io
import re

from dpc.errors import DpcError

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 72em; padding: 0 1.5em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.6em;
     border-bottom: 1px solid #ddd; } h3 { font-size: 1.02em; margin: 1.1em 0 0.3em; font-family: monospace; }
.dpc-src, .dpc-sig { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 0.8em 1em; overflow-x: auto;
       font-size: 0.92em; }
table.dpc-math { border-collapse: collapse; } table.dpc-math td { padding: 0.15em 0.8em 0.15em 0;
       vertical-align: middle; }
td.dpc-mark { font-family: monospace; color: #777; width: 1.2em; } td.dpc-note { color: #555; }
tr.dpc-derivation td { color: #444; } tr.dpc-removed td { text-decoration: line-through; color: #999; }
table.dpc-learned { border-collapse: collapse; } table.dpc-learned th, table.dpc-learned td {
       border: 1px solid #ddd; padding: 0.3em 0.7em; text-align: left; }
.dpc-drawing svg { max-width: 100%; height: auto; }
math { font-size: 1.08em; }
"""


def _mathml(tex: str) -> str | None:
    """LaTeX as a <math> element, or None without latex2mathml."""
    try:
        from latex2mathml.converter import convert
    except ImportError:
        return None
    return convert(_for_mathml(tex))


def _for_mathml(tex: str) -> str:
    r"""What latex2mathml reads of dpc's LaTeX: \operatorname*{minimize}_{z} as \underset{z}{\operatorname{minimize}},
    \textless{} and friends as their characters."""
    tex = re.sub(r"\\operatorname\*\{([^}]*)\}_\{([^}]*)\}", r"\\underset{\2}{\\operatorname{\1}}", tex)
    for command, char in ((r"\textless{}", "&lt;"), (r"\textgreater{}", "&gt;"), (r"\textbar{}", "|"),
                          (r"\textasciicircum{}", "^"), (r"\textasciitilde{}", "~"),
                          (r"\textbackslash{}", "\u29f5")):
        tex = tex.replace(command, char)
    return tex


def math_html(tex: str, fallback: str) -> str:
    out = _mathml(tex)
    return out if out is not None else f"<code>{html.escape(fallback)}</code>"


def highlighted(source: str) -> str:
    """The .dp source as HTML, coloured by dpc's Pygments lexer when Pygments is installed."""
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter

        from dpc.grammar.pygments_lexer import DpLexer
    except ImportError:
        return f'<pre class="dpc-src">{html.escape(source)}</pre>'
    body = highlight(source, DpLexer(), HtmlFormatter(noclasses=True, nowrap=True))
    return f'<pre class="dpc-src">{body}</pre>'


def drawing_svg(program) -> str:
    """The network's drawing as inline SVG, or a line saying what it needs."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "<p>(the drawing needs matplotlib: <code>pip install 'dpc[graph]'</code>)</p>"
    import os
    import tempfile

    from dpc.backends.graph import write_drawing
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "network.svg")
        write_drawing(program, path)
        with open(path, encoding="utf-8") as f:
            svg = f.read()
    return svg[svg.index("<svg"):]  # drop the XML prolog and doctype: the page is HTML


def signature(explanation) -> str:
    """The generated module's class line, constructor and forward, from its source (no torch needed)."""
    from dpc.api import compile_with_program  # the report shows the warnings itself: none issued here
    source = compile_with_program(explanation.source, explanation.file).source
    keep = []
    for line in source.splitlines():
        stripped = line.strip()
        if line.startswith("class ") or stripped.startswith(("def __init__(", "def forward(", "def objective(")):
            keep.append(line.rstrip(":") if not line.startswith("class ") else line.rstrip(":"))
    return "\n".join(keep)


def _rows_html(stage) -> list[str]:
    from dpc.derivation import REMOVED, _marked
    out = []
    for row in stage.notes:
        out.append(f'<tr class="dpc-derivation"><td class="dpc-mark">|</td>'
                   f'<td>{math_html(row.inline(), row.inline())}</td></tr>')
    for row, mark in zip(stage.rows, stage.marks):
        css = ' class="dpc-removed"' if mark == REMOVED else ""
        shown = _marked(row, mark)
        main = f"{row.lhs} {row.rhs}".strip()
        note = math_html(shown.note, shown.note) if shown.note else ""
        out.append(f'<tr{css}><td class="dpc-mark">{html.escape(mark)}</td><td>{math_html(main, main)}</td>'
                   f'<td class="dpc-note">{note}</td></tr>')
    return out


def _learned_table(program) -> str:
    from dpc.derivation import _math, _Names, latex_shape, tex_name
    from dpc.graph import copies
    names = _Names(program).declared()
    rows = []
    for d in program.decls:
        if d.kind == "weight" or d.trainable:
            n = copies(program, d)
            tying = f"untied: {n} copies, one per layer" if n > 1 else (
                "tied: one copy shared by all layers" if (program.layers or 1) > 1 else "one copy")
            initial = _math(names, d.value) if d.value is not None else ""
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in (
                math_html(tex_name(d.name), d.name), math_html(latex_shape(d.shape), str(d.shape)), html.escape(tying),
                math_html(initial, "") if initial else "given")) + "</tr>")
    if not rows:
        return "<p>Nothing is learned.</p>"
    return ('<table class="dpc-learned"><tr><th>value</th><th>shape</th><th>tying</th><th>initial value</th></tr>'
            + "".join(rows) + "</table>")


def report_html(explanation, page: bool = True) -> str:
    """The report: a whole page (`page`), or the body alone (a notebook cell's output)."""
    from dpc.derivation import latex_stages
    program = explanation.program
    parts = [f"<h1>{html.escape(program.name)}</h1>",
             f"<p>{html.escape(explanation.file)}: {program.layers or 1} layer{'s' if (program.layers or 1) != 1 else ''}"
             f"{', tied' if program.tied else ', untied' if program.tied is False else ''}; "
             "the derivation as <code>dpc explain</code> shows it, pass by pass.</p>",
             "<h2>Source</h2>", highlighted(explanation.source), "<h2>Derivation</h2>"]
    for stage in latex_stages(explanation.stages):
        rows = _rows_html(stage)
        parts.append(f"<h3>{html.escape(stage.label)}</h3>")
        parts.append('<table class="dpc-math">' + "".join(rows) + "</table>" if rows else "<p>(no change)</p>")
    parts += ["<h2>Network</h2>", f'<div class="dpc-drawing">{drawing_svg(program)}</div>',
              "<h2>Learned values</h2>", _learned_table(program),
              "<h2>Generated module</h2>", f'<pre class="dpc-sig">{html.escape(signature(explanation))}</pre>']
    body = "\n".join(parts)
    if not page:
        return f'<div class="dpc-report"><style>{STYLE}</style>{body}</div>'
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(program.name)}: dpc explain</title><style>{STYLE}</style></head>"
            f"<body>\n{body}\n</body></html>\n")


def write_report(explanation, path: str) -> None:
    text = report_html(explanation)
    try:
        with io.open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as err:
        raise DpcError(f"cannot write {path}: {err.strerror or err}", hint="choose another path") from None
