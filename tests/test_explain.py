"""`dpc explain`: what each pass changed (shorter than the whole program after every pass, --full), the
split's names never the program's, and --latex as LaTeX that a real renderer (KaTeX under node) renders
for every example; `dpc.explain(path)` in a notebook (nbclient) shows HTML and LaTeX."""
import json
import re
import shutil
import subprocess

import pytest

from conftest import EXAMPLES, run_dpc

ALL_EXAMPLES = sorted(p.name for p in EXAMPLES.glob("*.dp"))


def explain(*args: str) -> str:
    from dpc.cli import main
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["explain", *args]) == 0
    return out.getvalue()


def sections(text: str) -> dict[str, list[str]]:
    out, current = {}, None
    for line in text.splitlines():
        if line.startswith("== "):
            current = line[3:]
            out[current] = []
        elif current is not None and line.strip():
            out[current].append(line)
    return out


# --- changes, not the whole program -------------------------------------------------------------------

@pytest.mark.parametrize("example", ALL_EXAMPLES)
def test_explain_is_shorter_than_full_and_every_pass_says_something(example):
    path = str(EXAMPLES / example)
    short, full = explain(path), explain("--full", path)
    assert len(short.splitlines()) * 3 < len(full.splitlines()) * 2, (len(short.splitlines()), len(full.splitlines()))
    assert [h for h in short.splitlines() if h.startswith("== ")] == [h for h in full.splitlines() if h.startswith("== ")]
    parts = sections(short)
    assert sum(line.startswith("network ") for line in short.splitlines()) == 1  # the source, once
    for label, lines in parts.items():
        if label not in ("source", "parameters"):
            assert lines, f"{example}: pass {label} shows nothing"
            assert all(re.match(r"   [|+~-] ", line) or line == "   (no change)" for line in lines), lines


# (example, the pass, a line its section must hold): one a kind of pass
PASS_CHANGES = [
    ("lista.dp", "derive proxgrad(step = 1/L)", "   + update: z <- soft(z - 1/L*D.T @ (D @ z - x), lam/L)"),
    ("lista.dp", "unroll 16", "   + unroll 16"),
    ("lista.dp", "learn weights untied", "   + weight W : R[n, m] = 1/L*D.T    # learned, one per layer"),
    ("lista.dp", "learn weights untied", "   ~ update: z <- soft(W @ x + S @ z, theta)"),
    ("lista.dp", "output z", "   + output z"),
    ("lista.dp", "fold start", "   + first layer: z <- soft(W @ x, theta)"),
    ("lista.dp", "batch products", "   ~ every later layer: z <- soft(all_layers(W @ x) + S @ z, theta)"),
    ("lfista.dp", "derive fista(step = 1/L)", "   + var t : R = 1"),
    ("logistic.dp", "derive fista", "   | no step given: step = 1/L, L = 0.25*opnorm(A)^2 (Lipschitz constant of grad f)"),
    ("tv1d.dp", "derive pdhg", "   + var y : R[n - 1] = 0"),
    ("admm_net.dp", "derive admm(rho = rho)", "   + let A : R[n, n] = rho*Dd.T @ Dd + eye(n)"),
    ("admm_net.dp", "learn rho untied", "   ~ hyper rho = 1    # learned, one copy per layer"),
    ("kmeansnet.dp", "relax onehot -> softmax(tau)", "   ~ subject to s in simplex"),
    ("kmeansnet.dp", "derive closed", "   + s = softmax(W @ x + b)"),
    ("kmeansnet.dp", "learn C", "   ~ param C : R[k, d]    # learned"),
    ("sc2net.dp", "adapt gates(init = ista)", "   + var c : R[n] = 0"),
    ("lista_cpss.dp", "adapt support(p = 1.2, pmax = 13)",
     "   ~ update: z <- softss(z - 1/L*D.T @ (D @ z - x), lam/L, 1.2, 13)"),
    ("lista_cp.dp", "learn weights coupled", "   ~ update: z <- soft(z + W @ (x - D @ z), theta)"),
    ("alista.dp", "learn stepsizes untied", "   + weight gamma = 1    # learned, one per layer"),
    ("lasso_deq.dp", "unroll until(tol = 1e-6, max = 1000)", "   + unroll 1000"),
    ("lasso_deq.dp", "backward implicit", "   | the gradient at the fixed point, by implicit differentiation: "
                                          "memory does not grow with the iterations"),
    ("lasso_deq.dp", "learn D, lam", "   ~ hyper lam = 0.1    # learned"),
]


@pytest.mark.parametrize("example, label, line", PASS_CHANGES, ids=[f"{e}:{label}" for e, label, _ in PASS_CHANGES])
def test_each_kind_of_pass_shows_its_change(example, label, line):
    parts = sections(explain(str(EXAMPLES / example)))
    assert label in parts, sorted(parts)
    assert line in parts[label], "\n".join(parts[label])


def test_full_keeps_the_whole_program_after_every_pass():
    out = explain("--full", str(EXAMPLES / "lista.dp"))
    assert out.count("network LISTA") == 7
    assert "  every later layer {\n    z <- soft(all_layers(W @ x) + S @ z, theta)\n  }" in out
    assert "   | z <- soft(W @ x + S @ z, theta)" in out


def test_a_note_the_change_repeats_is_shown_once():
    parts = sections(explain(str(EXAMPLES / "lista.dp")))
    learn = parts["learn weights untied"]
    assert "   | W = 1/L*D.T" not in learn and "   | z <- soft(W @ x + S @ z, theta)" not in learn
    assert "   | weights: one copy per layer" in learn


CLASH = """network Den
dims n
input f : R[n]
param G : R[n, n]
hyper lam = 0.1
var z : R[n] = f
minimize 0.5 * sqnorm(z - f) + 0.5 * sqnorm(G @ z) + lam * norm1(z)
derive proxgrad(step = 0.1)
unroll 4
output z
"""


def test_the_splits_names_never_clash_with_the_programs(tmp_path):
    path = tmp_path / "den.dp"
    path.write_text(CLASH)
    out = explain(str(path))
    assert "f(z) =" not in out and "grad f(z)" not in out
    assert "   | F(z) = 0.5*sqnorm(z - f) + 0.5*sqnorm(G @ z)    (smooth)" in out
    assert "   | grad F(z) = " in out
    latex = explain("--latex", str(path))
    assert r"F\left(z\right) &= " in latex and r"\nabla F\left(z\right)" in latex
    # a program declaring f and F and G: the next names
    from dpc.derivation import rename_split, split_names
    names = split_names({"f", "F", "g", "G"})
    assert names == {"f": "phi", "g": "psi"}
    assert rename_split("grad f(z) = D.T @ (f - z); prox of tau*f: g(v) = lam*norm1(v)", names) == \
        "grad phi(z) = D.T @ (f - z); prox of tau*phi: psi(v) = lam*norm1(v)"


# --- --latex -------------------------------------------------------------------------------------------

def align_blocks(tex: str) -> list[str]:
    return re.findall(r"\\begin\{align\*\}.*?\\end\{align\*\}", tex, flags=re.S)


def test_latex_is_paste_ready():
    tex = explain("--latex", str(EXAMPLES / "lista.dp"))
    # outside the align* blocks: comments only, so the fragment compiles where it is pasted (amsmath)
    rest = re.sub(r"\\begin\{align\*\}.*?\\end\{align\*\}", "", tex, flags=re.S)
    assert all(not line.strip() or line.startswith("%") for line in rest.splitlines()), rest
    assert r"z^{k+1} &= \operatorname{soft}\left(W_{k} x + S_{k} z^{k}, \theta_{k}\right)" in tex
    assert r"z^{1} &= \operatorname{soft}\left(W_{0} x, \theta_{0}\right)" in tex
    assert r"\lambda &= 0.1" in tex and not re.search(r"(?<!\\)\blam\b", tex.split("\n", 1)[1])
    assert r"\operatorname*{minimize}_{z}\ 0.5 \left\|x - D z\right\|_{2}^{2} + \lambda \left\|z\right\|_{1}" in tex
    assert r"\nabla f\left(z\right) &= D^{T} \left(D z - x\right)" in tex  # a note, as math
    assert "hyper " not in tex and "<-" not in tex and "{next}" not in tex


def test_latex_updates_read_iteration_indices():
    tex = explain("--latex", str(EXAMPLES / "lfista.dp"))
    assert "_{next}" not in tex and "next" not in tex
    assert r"z^{k+1} &= \operatorname{soft}" in tex and "t^{k+1} &= " in tex
    tv = explain("--latex", str(EXAMPLES / "tv1d.dp"))
    assert r"\tau &= 0.495" in tv and r"\mathit{zbar}^{k+1} &= 2 z^{k+1} - z^{k}" in tv


def test_latex_standalone_is_a_document():
    tex = explain("--latex", "--standalone", str(EXAMPLES / "lista.dp"))
    assert tex.startswith("\\documentclass{article}\n\\usepackage{amsmath,amssymb}\n\\begin{document}")
    assert tex.rstrip().endswith("\\end{document}")
    assert run_dpc("explain", "--standalone", str(EXAMPLES / "lista.dp")).returncode == 1


def test_latex_names_are_rendered_consistently():
    from dpc.derivation import tex_name
    assert [tex_name(n) for n in ("lam", "tau", "sigma", "theta", "normK", "U_f", "y1", "z_prev", "Dd")] == \
        [r"\lambda", r"\tau", r"\sigma", r"\theta", r"\mathit{normK}", "U_{f}", "y_{1}", r"z_{\mathrm{prev}}",
         r"\mathit{Dd}"]
    assert tex_name("theta", sub="k") == r"\theta_{k}" and tex_name("U_f", sub="k") == "U_{f,k}"
    assert tex_name("z", sup="k+1") == "z^{k+1}"


@pytest.fixture(scope="session")
def katex(tmp_path_factory):
    """KaTeX under node, installed once for the session (npm install katex)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to render LaTeX with KaTeX (apt-get install nodejs npm)")
    prefix = tmp_path_factory.mktemp("katex")
    run = subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(prefix), "katex"],
                         capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        pytest.skip(f"npm install katex failed (no registry?): {run.stderr[-300:]}")
    script = prefix / "render.js"
    script.write_text("""
const katex = require(process.argv[2]);
let input = "";
process.stdin.on("data", d => input += d);
process.stdin.on("end", () => {
  const out = JSON.parse(input).map(([name, tex]) => {
    try { katex.renderToString(tex, {displayMode: true, throwOnError: true, strict: "error"}); return [name, null]; }
    catch (e) { return [name, String(e.message || e)]; }
  });
  process.stdout.write(JSON.stringify(out));
});
""")
    return lambda items: json.loads(subprocess.run(
        ["node", str(script), str(prefix / "node_modules" / "katex")], input=json.dumps(items),
        capture_output=True, text=True, check=True, timeout=120).stdout)


def test_every_examples_latex_renders_in_katex(katex):
    """Each align* block of every example, changes and --full, renders with KaTeX's strict mode: no
    parse error, no unknown command, no LaTeX KaTeX would only warn about."""
    items = []
    for example in ALL_EXAMPLES:
        for flags in ((), ("--full",)):
            tex = explain("--latex", *flags, str(EXAMPLES / example))
            blocks = align_blocks(tex)
            assert blocks, example
            items += [[f"{example} {' '.join(flags)} block {i}", b] for i, b in enumerate(blocks)]
    errors = [f"{name}: {error}" for name, error in katex(items) if error]
    assert not errors, "\n".join(errors[:10])


def test_katex_catches_a_broken_block(katex):
    [[_, error]] = katex([["bad", r"\begin{align*} z^{k}^{2} \end{align*}"]])
    assert error and "Double superscript" in error


# --- notebooks -----------------------------------------------------------------------------------------

def test_explanation_has_html_and_latex_representations():
    import dpc
    e = dpc.explain(EXAMPLES / "lista.dp")
    html = e._repr_html_()
    assert "<math" in html and "LISTA" in html and "<svg" in html
    assert e._repr_latex_().startswith(r"\begin{align*}") and "%" not in e._repr_latex_()
    assert "== learn weights untied" in str(e)
    assert dpc.explain(EXAMPLES / "lista.dp", unroll=4).program.layers == 4


def test_a_notebook_displays_the_explanation(tmp_path):
    """A real kernel (nbclient, ipykernel) runs `dpc.explain("examples/lista.dp")`: its output carries
    text/html and text/latex."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell('import dpc\ndpc.explain("examples/lista.dp")'))
    root = EXAMPLES.parent
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(root)}}).execute()
    [output] = nb.cells[0].outputs
    assert output["output_type"] == "execute_result"
    assert "<math" in output["data"]["text/html"] and "<svg" in output["data"]["text/html"]
    assert r"z^{k+1} &= \operatorname{soft}" in output["data"]["text/latex"]
