"""dpc: compile optimisation objectives and iterative updates into PyTorch networks.

The compiler never imports torch; only `load` (which runs generated code) does.
"""
__version__ = "0.1.0"


def load(path, **options):
    """Compile a .dp file (or import a generated .py) and return its nn.Module class."""
    from dpc.api import load as _load
    return _load(path, **options)


def compile_source(text, file="<string>", **options):
    """Compile .dp source text to the generated PyTorch module's source."""
    from dpc.api import compile_source as _compile
    return _compile(text, file, **options)


def explain(path, **overrides):
    """The derivation of a .dp file: print it (str), or display it in Jupyter (HTML with MathML and the
    drawing; LaTeX); `.latex()`, `.html()` as `dpc explain --latex`, `--html`. Overrides as `--set`:
    dpc.explain("lista.dp", unroll=32)."""
    from dpc.derivation import Explanation
    return Explanation.from_path(path, {k: str(v) for k, v in overrides.items()} or None)
