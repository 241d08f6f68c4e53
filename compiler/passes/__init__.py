"""Every pass, registered in one table: (directive kind, method) -> pure function Program -> Program.

A method of "" means the kind takes no method name (unroll, learn, output).
"""
from __future__ import annotations

from dpc.passes.adapt_gates import adapt_gates
from dpc.passes.admm import derive_admm
from dpc.passes.backward import backward
from dpc.passes.batch_products import NAME as BATCH_PRODUCTS, batch_products
from dpc.passes.adapt_support import adapt_support
from dpc.passes.fista import derive_fista
from dpc.passes.fold_start import fold_start
from dpc.passes.gd import derive_gd
from dpc.passes.learn import learn
from dpc.passes.pdhg import derive_pdhg
from dpc.passes.output import output
from dpc.passes.proxgrad import derive_proxgrad
from dpc.passes.unroll import unroll
from dpc.passes.closed import derive_closed
from dpc.passes.relax import relax
from dpc.relaxations import methods as relax_methods

PASSES = {
    ("derive", "proxgrad"): derive_proxgrad,
    ("derive", "fista"): derive_fista,
    ("derive", "gd"): derive_gd,
    ("unroll", ""): unroll,
    ("learn", ""): learn,
    ("output", ""): output,
    ("backward", ""): backward,
    ("derive", "closed"): derive_closed,
    ("derive", "admm"): derive_admm,
    ("derive", "pdhg"): derive_pdhg,
    ("adapt", "gates"): adapt_gates,
    ("adapt", "support"): adapt_support,
}
PASSES.update({("relax", method): relax for method in relax_methods()})  # one pass, rules in relaxations.py

# The named options each derive method reads; any other is an error at the option (a misspelt `stp = 0.1`
# must not be silently ignored). Passes that check their own options (adapt, relax) are not listed.
DERIVE_OPTIONS = {
    "proxgrad": ("step",),
    "fista": ("step",),
    "gd": ("step",),
    "closed": (),
    "admm": ("rho", "solve"),
    "pdhg": ("tau", "sigma"),
}

# Run after the program's own directives, in this order.
IMPLICIT = (("fold start", fold_start), (BATCH_PRODUCTS, batch_products))


def methods(kind: str) -> list[str]:
    return sorted(m for k, m in PASSES if k == kind and m)
