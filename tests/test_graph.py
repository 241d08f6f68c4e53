"""`dpc graph` (drawings of the unrolled network); `dpc explain` is tests/test_explain.py.

The drawn network is checked against the compiled PyTorch module itself: every nn.Parameter is a learned
value of the drawing, with one node per layer when the module stacks one copy a layer, else one node.
"""
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from conftest import EXAMPLES, layers, run_dpc

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALL_EXAMPLES = sorted(p.name for p in EXAMPLES.glob("*.dp"))


def dot_nodes(text: str) -> dict[str, str]:
    """DOT node statements -> their labels (edges and attributes of the graph are skipped)."""
    return dict(re.findall(r'^\s*"([^"]+)" \[label="([^"]*)"', text, flags=re.M))


def dot_edges(text: str) -> set[tuple[str, str]]:
    return set(re.findall(r'^\s*"([^"]+)" -> "([^"]+)"', text, flags=re.M))


def graph_of(path, overrides=None, all_layers=True):
    from dpc.backends.graph import network_graph
    from dpc.pipeline import compile_program
    return network_graph(compile_program(path.read_text(), str(path), overrides), all_layers)


def nx_path(g, a, b):
    import networkx as nx
    return nx.shortest_path(g, a, b)


def draw(tmp_path, example: str, suffix: str, *extra: str):
    from dpc.cli import main
    if suffix in (".svg", ".png"):
        pytest.importorskip("matplotlib")  # the `graph` extra; .dot needs nothing
    out = tmp_path / (example.removesuffix(".dp") + suffix)
    assert main(["graph", str(EXAMPLES / example), "-o", str(out), *extra]) == 0
    return out


# --- every example, every format --------------------------------------------------

@pytest.mark.parametrize("example", ALL_EXAMPLES)
def test_every_example_draws_as_svg_png_and_dot(tmp_path, example):
    svg = ET.parse(draw(tmp_path, example, ".svg")).getroot()
    assert svg.tag.endswith("svg")
    assert draw(tmp_path, example, ".png").read_bytes().startswith(PNG_SIGNATURE)
    dot = draw(tmp_path, example, ".dot").read_text(encoding="utf-8")
    assert dot.startswith("digraph ") and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    nodes = dot_nodes(dot)
    assert all(a in nodes and b in nodes for a, b in dot_edges(dot)), "an edge names a node never declared"


# --- the drawing is the network --------------------------------------------------

@pytest.mark.parametrize("example", ALL_EXAMPLES)
def test_learned_nodes_are_the_modules_parameters(example):
    """Each learned value of the compiled module is drawn: one node a layer when the module holds one copy a
    layer (a stack with a leading dimension of length T, or a ParameterList of T), one node shared by every
    layer otherwise."""
    import torch

    import dpc
    from dpc.pipeline import compile_program
    path = EXAMPLES / example
    program = compile_program(path.read_text(), str(path))
    sizes = {dim: 5 + 3 * i for i, dim in enumerate(program.dims)}  # 5, 8: neither is the layer count 16
    rng = np.random.default_rng(0)
    given = {d.name: torch.tensor(rng.standard_normal([sizes[s] for s in d.shape]))
             for d in program.decls if d.kind == "param"}
    bound = {dim for d in program.decls if d.kind == "param" for dim in d.shape}
    unbound = {dim: sizes[dim] for dim in program.dims if dim not in bound}  # rpca.dp: its dims come with X
    module = dpc.load(path)(**given, **unbound)
    g = graph_of(path)
    drawn: dict[str, list] = {}
    for _, data in g.nodes(data=True):
        if data["role"] == "param":
            drawn.setdefault(data["name"], []).append(data["layer"])
    # S.3 is layer 3's copy of S; rho_raw holds a learned value kept > 0 (its softplus is rho)
    stored = {name.split(".")[0] for name, _ in module.named_parameters()}
    names = {n.removesuffix("_raw") if n.endswith("_raw") and program.has(n.removesuffix("_raw")) else n
             for n in stored}
    assert set(drawn) == names
    count = program.layers or 1
    for name in names:
        tensor = layers(module, name if name in stored else name + "_raw")
        if tensor.dim() == len(program.decl(name).shape) + 1:  # one copy per layer
            assert tensor.shape[0] == count
            assert sorted(drawn[name]) == list(range(1, count + 1)), name
        else:
            assert drawn[name] == [None], name  # one node, tied


def test_untied_lista_draws_sixteen_copies_of_each_weight(tmp_path):
    dot = draw(tmp_path, "lista.dp", ".dot", "--all").read_text(encoding="utf-8")
    nodes, edges = dot_nodes(dot), dot_edges(dot)
    for w in ("W", "S", "theta"):
        copies = sorted(int(n.split("@")[1]) for n in nodes if n.startswith(f"param:{w}@"))
        assert copies == list(range(1, 17))
        assert f"param:{w}" not in nodes
        assert nodes[f"param:{w}@16"] == f"{w}₁₆"
    # each copy feeds its own layer only
    assert ("param:W@5", "state:z@5") in edges and not any(a == "param:W@5" and b != "state:z@5" for a, b in edges)
    # the chain z1 -> z2 -> ... -> z16, and x feeds every layer
    assert {(f"state:z@{k}", f"state:z@{k + 1}") for k in range(1, 16)} <= edges
    assert {b for a, b in edges if a == "input:x"} == {f"state:z@{k}" for k in range(1, 17)}
    assert "peripheries=2" in dot.split('"state:z@16"')[1].split("\n")[0]  # the output


def test_tied_lista_draws_one_node_wired_to_every_layer(tmp_path):
    src = tmp_path / "tied.dp"
    src.write_text((EXAMPLES / "lista.dp").read_text().replace("learn  weights untied", "learn  weights tied"))
    out = tmp_path / "tied.dot"
    assert run_dpc("graph", str(src), "-o", str(out), "--all").returncode == 0
    dot = out.read_text(encoding="utf-8")
    nodes, edges = dot_nodes(dot), dot_edges(dot)
    for w in ("W", "S", "theta"):
        assert [n for n in nodes if n.startswith(f"param:{w}")] == [f"param:{w}"]
    assert {b for a, b in edges if a == "param:W"} == {f"state:z@{k}" for k in range(1, 17)}
    assert {b for a, b in edges if a == "param:S"} == {f"state:z@{k}" for k in range(2, 17)}  # layer 1: soft(W x, theta)


def test_a_parameter_is_wired_only_to_the_states_that_read_it():
    """LFISTA: z_next = soft(W x + S y, theta) feeds y and z; t's update reads none of the weights."""
    g = graph_of(EXAMPLES / "lfista.dp")
    for k in (2, 9, 16):
        assert set(g.successors(f"param:S@{k}")) == {f"state:y@{k}", f"state:z@{k}"}
        assert not any(g.nodes[p]["role"] == "param" for p in g.predecessors(f"state:t@{k}"))
    assert not list(g.successors("param:S@1"))  # layer 1 starts from y = 0: S @ y folded away


def test_a_closed_form_network_is_one_layer():
    g = graph_of(EXAMPLES / "kmeansnet.dp")
    states = [n for n, d in g.nodes(data=True) if d["role"] in ("state", "start")]
    assert states == ["state:s@1"]
    # s = softmax(W x + b) with lets W = 2/tau*C, b = -rowsqnorm(C)/tau: the learned C reaches s through them
    assert set(g.predecessors("state:s@1")) == {"param:C", "input:x"}


def test_a_long_unroll_is_drawn_as_first_block_last(tmp_path):
    png = draw(tmp_path, "lfista.dp", ".png", "--set", "unroll=10000")
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    g = graph_of(EXAMPLES / "lfista.dp", {"unroll": "10000"}, all_layers=False)
    assert [(c.title, c.repeat) for c in g.graph["columns"]] == [("layer 1", 1), ("layers 2–9999", 9998),
                                                                 ("layer 10000", 1)]
    assert sorted(str(d["layer"]) for _, d in g.nodes(data=True) if d.get("name") == "W") == ["1", "10000", "k"]
    assert g.nodes["param:W@k"]["label"] == "Wₖ"
    assert ("state:y@1", "state:z@k") in g.edges and ("state:y@k", "state:z@10000") in g.edges
    assert g.number_of_nodes() < 30
    dot = draw(tmp_path, "lfista.dp", ".dot", "--set", "unroll=10000").read_text(encoding="utf-8")
    assert "layers 2–9999 (× 9998)" in dot


def test_collapsing_is_the_default_past_three_layers_and_all_draws_every_one(tmp_path):
    assert len(graph_of(EXAMPLES / "lista.dp", all_layers=False).graph["columns"]) == 3
    assert len(graph_of(EXAMPLES / "lista.dp", {"unroll": "3"}, all_layers=False).graph["columns"]) == 3
    assert len(graph_of(EXAMPLES / "lista.dp", all_layers=True).graph["columns"]) == 16


def test_starts_show_where_they_come_from_and_operators_are_drawn():
    """z = f: the start is labelled with its value and wired to the input; the operator G a layer reads
    (a param not learned) is one node wired to every layer's state."""
    import networkx as nx  # noqa: F401
    from dpc.backends.graph import network_graph
    from dpc.pipeline import compile_program
    text = ("network Den\ndims n\ninput f : R[n]\nparam G : R[n, n]\nhyper lam = 0.1\nvar z : R[n] = f\n"
            "minimize 0.5 * sqnorm(z - f) + 0.5 * sqnorm(G @ z) + lam * norm1(z)\n"
            "derive proxgrad(step = 0.1)\nunroll 8\noutput z\n")
    g = network_graph(compile_program(text, "den.dp"))
    assert g.nodes["state:z@0"]["label"] == "z₀ = f"
    assert ("input:f", "state:z@0") in g.edges
    assert g.nodes["operator:G"]["role"] == "operator"
    assert {b for a, b in g.edges if a == "operator:G"} == {"state:z@1", "state:z@k", "state:z@8"}


def test_every_example_draws_at_a_fixed_font_size_at_its_depth_and_at_1000_layers(tmp_path):
    """The figure grows with the labels, never the text shrinks: the same font size at 16 and at 1000
    layers, and the collapsed drawing stays under 1200 x 1200 pixels."""
    pytest.importorskip("matplotlib")
    from PIL import Image
    from dpc.backends.graph import draw as drawing
    assert drawing.FONT_SIZE >= 10
    for example in ALL_EXAMPLES:
        for extra in ((), ("--set", "unroll=1000")):
            if extra and "unroll" not in (EXAMPLES / example).read_text():
                continue
            png = draw(tmp_path, example, ".png", *extra)
            width, height = Image.open(png).size
            assert width <= 1200 and height <= 1200, (example, extra, width, height)


def test_the_same_program_draws_the_same_bytes(tmp_path):
    for suffix in (".svg", ".dot"):
        first = draw(tmp_path, "sc2net.dp", suffix).read_bytes()
        assert draw(tmp_path, "sc2net.dp", suffix).read_bytes() == first


def test_dot_needs_no_matplotlib(tmp_path):
    out = tmp_path / "l.dot"
    code = ("import sys; from dpc.cli import main; "
            f"assert main(['graph', {str(EXAMPLES / 'lista.dp')!r}, '-o', {str(out)!r}]) == 0; "
            "assert 'matplotlib' not in sys.modules and 'torch' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert out.read_text(encoding="utf-8").startswith('digraph "LISTA"')


def test_dot_to_stdout():
    result = run_dpc("graph", "examples/lista.dp", "-o", "-")
    assert result.returncode == 0 and result.stdout.startswith('digraph "LISTA"')


# --- mistakes -----------------------------------------------------------------------

def test_an_unknown_extension_is_an_error_with_a_hint(tmp_path):
    out = tmp_path / "net.pdf"
    result = run_dpc("graph", "examples/lista.dp", "-o", str(out))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: cannot draw to {out}: '.pdf' is not a format dpc graph writes" in result.stderr
    assert "hint: end the path in .svg, .png or .dot" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".svg", ".dot"])
def test_an_unwritable_path_is_an_error_with_a_hint(tmp_path, capsys, suffix):
    from dpc.cli import main
    if suffix == ".svg":
        pytest.importorskip("matplotlib")
    out = tmp_path / "no such folder" / f"net{suffix}"
    assert main(["graph", str(EXAMPLES / "lista.dp"), "-o", str(out)]) == 1
    stderr = capsys.readouterr().err
    assert f"error: cannot write {out}: No such file or directory" in stderr
    assert "hint: choose another path with -o" in stderr


def test_a_mistake_in_the_program_points_at_it(tmp_path):
    src = tmp_path / "bad.dp"
    src.write_text((EXAMPLES / "lista.dp").read_text().replace("sqnorm(x - D @ z)", "sqnorm(x - D.T @ z)"))
    result = run_dpc("graph", str(src), "-o", str(tmp_path / "bad.svg"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert re.search(r"bad\.dp:\d+:\d+: error: cannot multiply", result.stderr)
    assert not (tmp_path / "bad.svg").exists()
