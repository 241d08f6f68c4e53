"""Every pass, in one table: (directive kind, method) -> pure function Program -> Program.

A method of "" means the kind takes no method name (unroll, learn, output). The derive methods declare
themselves in their own files (passes/derive.py); PASSES and DERIVE_OPTIONS are live views of that
registry, so a method declared later (in a test) is found too.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping

from dpc.passes import admm, closed, fista, gd, hqs, pdhg, proxgrad  # noqa: F401  (each declares its derive method)
from dpc.passes.adapt_gates import adapt_gates
from dpc.passes.adapt_support import adapt_support
from dpc.passes.backward import backward
from dpc.passes.batch_products import NAME as BATCH_PRODUCTS, batch_products
from dpc.passes.derive import METHODS, OPTIONS
from dpc.passes.fold_start import fold_start
from dpc.passes.learn import learn
from dpc.passes.output import output
from dpc.passes.relax import relax
from dpc.passes.unroll import unroll
from dpc.relaxations import methods as relax_methods

_OTHERS = {
    ("unroll", ""): unroll,
    ("learn", ""): learn,
    ("output", ""): output,
    ("backward", ""): backward,
    ("adapt", "gates"): adapt_gates,
    ("adapt", "support"): adapt_support,
}
_OTHERS.update({("relax", method): relax for method in relax_methods()})  # one pass, rules in relaxations.py


class _Passes(Mapping):
    """The derive methods' registry and the other passes, as one read-only table."""

    def __getitem__(self, key):
        kind, method = key
        if kind == "derive" and method in METHODS:
            return METHODS[method].apply
        return _OTHERS[key]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        yield from (("derive", name) for name in METHODS)
        yield from _OTHERS

    def __len__(self) -> int:
        return len(METHODS) + len(_OTHERS)


PASSES: Mapping = _Passes()

# The named options each derive method reads; any other is an error at the option (a misspelt `stp = 0.1`
# must not be silently ignored). Passes that check their own options (adapt, relax) are not listed.
DERIVE_OPTIONS: Mapping[str, tuple[str, ...]] = OPTIONS

# Run after the program's own directives, in this order.
IMPLICIT = (("fold start", fold_start), (BATCH_PRODUCTS, batch_products))


def methods(kind: str) -> list[str]:
    return sorted(m for k, m in PASSES if k == kind and m)
