"""A derive method is declared once, in its own pass file: its name, its options (each with the reader
that lowers and checks it) and its pass. The pipeline's tables (passes.PASSES, passes.DERIVE_OPTIONS)
are views of this registry, so a new method touches one file:

    @derive_method("heavyball", STEP, Option("beta", positive_scalar, sp.Rational(1, 2)))
    def derive_heavyball(program, directive): ...

Inside the pass, `option(program, directive, "beta")` is the value written, lowered and checked by the
declared reader, or the declared default. The shared first-order machinery is in passes/firstorder.py.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from dpc.ir import Directive, Program

Pass = Callable[[Program, Directive], Program]


@dataclass(frozen=True)
class Option:
    """`derive METHOD(name = value)`. read(program, directive, name) lowers and checks the value written;
    None when the method reads it itself (proxgrad's step: split() reads it, with 1/L as its default)."""

    name: str
    read: Callable | None = None
    default: object = None  # when the option is not written (None: the method computes one or needs none)


@dataclass(frozen=True)
class DeriveMethod:
    name: str
    apply: Pass
    options: tuple[Option, ...] = ()
    # whether its convergence needs a convex objective (proximal and splitting methods, closed forms): the
    # pipeline warns at a concave term (dpc.convexity). gd does not: non-convex energies are fine for it.
    needs_convex: bool = True

    def option(self, key: str) -> Option:
        for o in self.options:
            if o.name == key:
                return o
        raise KeyError(f"derive {self.name} declares no option '{key}'")


_METHODS: dict[str, DeriveMethod] = {}


class DeclarationError(Exception):
    """A derive method declared twice, or an option declared twice (a bug in a pass file, not in a program)."""


def register(method: DeriveMethod) -> DeriveMethod:
    names = [o.name for o in method.options]
    if len(set(names)) != len(names):
        raise DeclarationError(f"derive {method.name} declares an option twice: {', '.join(names)}")
    old = _METHODS.get(method.name)
    if old is not None and old.apply is not method.apply:
        raise DeclarationError(f"derive {method.name} is already declared (by {old.apply.__module__})")
    _METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    """Forget a method (a test's own declaration, at the test's end)."""
    _METHODS.pop(name, None)


def derive_method(name: str, *options: Option, needs_convex: bool = True):
    """Decorator: declare `derive NAME(options...)` as the decorated pass (returned unchanged).
    needs_convex=False for a method that is fine on a non-convex objective (gd)."""
    def declare(fn: Pass) -> Pass:
        register(DeriveMethod(name, fn, tuple(options), needs_convex))
        return fn
    return declare


def option(program: Program, directive: Directive, key: str):
    """The value of a declared option of the directive's method: read and checked, or its default."""
    declared = _METHODS[directive.name].option(key)
    if directive.kwarg(key) is None:
        return declared.default
    if declared.read is None:
        raise DeclarationError(f"derive {directive.name}'s {key} has no reader: the method reads it itself")
    return declared.read(program, directive, key)


class _View(Mapping):
    """A read-only live view of the registry, so a method declared later (in a test) is seen too."""

    def __init__(self, item: Callable[[DeriveMethod], object]):
        self._item = item

    def __getitem__(self, name: str):
        return self._item(_METHODS[name])

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(_METHODS))

    def __len__(self) -> int:
        return len(_METHODS)


METHODS: Mapping[str, DeriveMethod] = _View(lambda m: m)
OPTIONS: Mapping[str, tuple[str, ...]] = _View(lambda m: tuple(o.name for o in m.options))
