"""The Python API: compile .dp text to module source; load a compiled class for training code."""
from __future__ import annotations

import hashlib
import os
import sys
import types
from typing import TYPE_CHECKING, NamedTuple

from dpc.errors import DpcError, deep_nesting, read_source

if TYPE_CHECKING:  # the IR needs sympy: not imported to load an already generated .py
    from dpc.ir import Program


class Compiled(NamedTuple):
    """What compile_with_program returns: the compiled IR program and the generated module's source."""

    program: Program
    source: str


def compile_with_program(text: str, file: str = "<string>", overrides=None) -> Compiled:
    """.dp source -> Compiled(program, source): the IR program after every pass (what `dpc explain` shows
    last; what dpc.reference evaluates) and the generated PyTorch module's source, from one compilation.
    Tools that check the module against the program (the fuzzer, dpc.fuzz) call this."""
    # imported here so that loading an already generated .py needs neither lark nor sympy
    from dpc.backends.torch.emit import emit_module
    from dpc.grammar.parser import nesting_error
    from dpc.pipeline import compile_program, parse_overrides
    if isinstance(overrides, (list, tuple)):
        overrides = parse_overrides(overrides)
    try:
        with deep_nesting():
            program = compile_program(text, file, overrides)
            return Compiled(program, emit_module(program, os.path.basename(file)))
    except DpcError as e:
        raise e.with_source(text) from None
    except RecursionError:  # the emitter's printer recurses on an expression's depth
        raise nesting_error(text, file) from None


class DpcWarning(UserWarning):
    """A program's warning (dpc.errors.warning) raised through the Python API: its text is what `dpc compile`
    prints, `FILE:LINE:COL: warning: ...` with the line, a caret and the hint."""


def compile_source(text: str, file: str = "<string>", overrides=None) -> str:
    """.dp source -> the generated PyTorch module's source (deterministic). The program's warnings (a step
    above 1/L, a non-convex objective under a proximal method, a learned value nothing reads) are issued as
    Python warnings (DpcWarning), each as `dpc compile` prints it; `dpc.load` of a .dp file does the same."""
    compiled = compile_with_program(text, file, overrides)
    if compiled.program.warnings:
        import warnings
        from dpc.errors import source_lines
        lines = source_lines(text)
        for w in compiled.program.warnings:
            warnings.warn(DpcWarning(w.format(text, lines)), stacklevel=_caller_level())
    return compiled.source


def _caller_level() -> int:
    """warnings.warn's stacklevel for the first frame outside dpc's own files (the user's call of dpc.load,
    dpc.compile_source, ...), counted from compile_source."""
    # the dpc package's own folder, whatever it is called: compiler/ in a checkout installed editable, dpc/ in
    # site-packages or a copied package
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(2), 3
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def compile_file(path, overrides=None) -> str:
    """A .dp file (read as UTF-8) -> the generated module's source; see compile_source."""
    path = os.fspath(path)
    return compile_source(read_source(path), path, overrides)


def load(path, overrides=None):
    """Compile a .dp file (or import a generated .py) and return its nn.Module class.

    overrides: {"unroll": "32", "lam": "0.2"} or ["unroll=32"], as `dpc compile --set`.
    """
    path = os.fspath(path)
    if path.endswith(".py"):
        with open(path, encoding="utf-8") as f:
            source = f.read()
    else:
        source = compile_file(path, overrides)
    digest = hashlib.sha1(source.encode()).hexdigest()[:12]
    name = f"dpc_generated_{os.path.splitext(os.path.basename(path))[0]}_{digest}"
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module  # torch.compile and pickling look modules up by name
    exec(compile(source, f"<dpc:{path}>", "exec"), module.__dict__)
    network = sys.modules["torch"].nn.Module  # imported by the generated code (dpc itself does not import torch)
    classes = [v for v in module.__dict__.values()
               if isinstance(v, type) and v.__module__ == name and issubclass(v, network)]
    if len(classes) != 1:
        raise DpcError(f"{path} does not define exactly one network class")
    if path.endswith(".py"):
        return classes[0]
    # from a .dp file: the class displays its derivation in Jupyter, as dpc.explain(path) does
    network = _Explained(classes[0].__name__, (classes[0],), {"__module__": name, "__doc__": classes[0].__doc__,
                                                                "__qualname__": classes[0].__qualname__})
    network._dpc_source = (path, dict(overrides) if isinstance(overrides, dict) else overrides)
    setattr(module, network.__name__, network)  # pickling finds the class by its module and name
    return network


class _Explained(type):
    """The metaclass of a class dpc.load compiled from a .dp file: Jupyter shows the class as its derivation
    (the report page's HTML, or LaTeX), computed when first shown. An instance displays as any nn.Module."""

    def _explanation(cls):
        from dpc.derivation import Explanation
        path, overrides = cls._dpc_source
        if isinstance(overrides, (list, tuple)):
            from dpc.pipeline import parse_overrides
            overrides = parse_overrides(overrides)
        return Explanation.from_path(path, overrides or None)

    def _repr_html_(cls):
        return cls._explanation()._repr_html_()

    def _repr_latex_(cls):
        return cls._explanation()._repr_latex_()
