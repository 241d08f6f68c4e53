"""The last line of a module written by `dpc compile`: what it was compiled from, so that a repeated
compile of an unchanged program can stop before importing sympy, networkx and lark.

    # dpc-stamp: compiler 0.1.0+1f2e3d4c5b6a; source sha256 <64 hex>; module sha256 <64 hex>

- compiler: dpc's version and a hash of the compiler's own files (.py, .lark), so that an edited
  compiler (an editable install keeps its version number) recompiles everything;
- source: the .dp text, its file name (the docstring names it) and the --set overrides, in order;
- module: the generated text above the stamp, so that a hand-edited output is rewritten.

Deterministic: the same program, overrides and compiler give the same line. Only the standard
library is imported here: this module is on the fast path of `dpc compile`.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from functools import lru_cache

import dpc

PREFIX = "# dpc-stamp: "
_STAMP = re.compile(r"# dpc-stamp: compiler (\S+); source sha256 ([0-9a-f]{64}); module sha256 ([0-9a-f]{64})")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _package_dirs() -> list[str]:
    """Where dpc, dpc.grammar and dpc.backends live (three folders in this repository's layout)."""
    dirs = [os.path.dirname(os.path.abspath(dpc.__file__))]
    for name in ("dpc.grammar", "dpc.backends"):
        spec = importlib.util.find_spec(name)  # imports only the parent, dpc
        dirs += [os.path.abspath(d) for d in (spec.submodule_search_locations or [])] if spec else []
    return sorted(set(dirs))


@lru_cache(maxsize=1)
def compiler_id() -> str:
    """'0.1.0+<12 hex>': dpc's version and a hash of every .py and .lark file of the compiler (~50 files,
    about a millisecond to read)."""
    digest = hashlib.sha256()
    for root in _package_dirs():
        for folder, subdirs, files in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith((".py", ".lark")):
                    path = os.path.join(folder, name)
                    digest.update(os.path.relpath(path, root).encode() + b"\0")
                    with open(path, "rb") as f:
                        digest.update(f.read() + b"\0")
    return f"{dpc.__version__}+{digest.hexdigest()[:12]}"


def source_hash(text: str, file: str, overrides=()) -> str:
    """sha256 of what the output depends on besides the compiler: the source, its name, the --set list."""
    sets = "".join(f"\n--set {item}" for item in overrides)
    return _sha256(f"{os.path.basename(file)}\n{text}\0{sets}")


def stamped(module: str, text: str, file: str, overrides=()) -> str:
    """The generated module with its stamp as the last line."""
    body = (module if module.endswith("\n") else module + "\n") + "\n"  # a blank line before the stamp
    return (f"{body}{PREFIX}compiler {compiler_id()}; source sha256 {source_hash(text, file, overrides)}; "
            f"module sha256 {_sha256(body)}\n")


def up_to_date(out: str, text: str, file: str, overrides=()) -> bool:
    """Whether `out` was written by this compiler from this source and overrides and not edited since."""
    try:
        with open(out, encoding="utf-8", newline="") as f:
            written = f.read()
    except (OSError, UnicodeDecodeError):
        return False
    if not written.endswith("\n"):
        return False
    head, _, last = written[:-1].rpartition("\n")
    match = _STAMP.fullmatch(last)
    if match is None or not head:
        return False
    compiler, source, module = match.groups()
    return (compiler == compiler_id() and source == source_hash(text, file, overrides)
            and module == _sha256(head + "\n"))
