"""The Python API: compile .dp text to module source; load a compiled class for training code."""
from __future__ import annotations

import hashlib
import os
import sys
import types

from dpc.errors import DpcError


def compile_source(text: str, file: str = "<string>", overrides=None) -> str:
    """.dp source -> the generated PyTorch module's source (deterministic)."""
    # imported here so that loading an already generated .py needs neither lark nor sympy
    from dpc.backends.torch.emit import emit_module
    from dpc.pipeline import compile_program, parse_overrides
    if isinstance(overrides, (list, tuple)):
        overrides = parse_overrides(overrides)
    program = compile_program(text, file, overrides)
    try:
        return emit_module(program, os.path.basename(file))
    except DpcError as e:
        raise e.with_source(text) from None


def compile_file(path: str, overrides=None) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise DpcError(f"cannot read {path}: {err.strerror}") from None
    return compile_source(text, str(path), overrides)


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
    classes = [v for v in module.__dict__.values()
               if isinstance(v, type) and v.__module__ == name and hasattr(v, "forward")]
    if len(classes) != 1:
        raise DpcError(f"{path} does not define exactly one network class")
    return classes[0]
