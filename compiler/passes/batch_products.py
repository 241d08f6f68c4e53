"""Implicit, after fold start: products of untied weights with an operand every layer shares, for all
layers at once.

In untied LISTA every layer computes W_k @ x: sixteen products that read the same input. A person
writing the network by hand computes them one per layer; the compiler sees the whole unrolled
network, so it marks each such product `all_layers(W @ x)`: the emitter computes it for every layer
in one batched product before the layer loop ((steps, batch, n), layer k reads slice k), and backward
gets W's gradient from one batched product too, already stacked like W (no per-layer gradients to
stack). The marker means its argument (reference semantics: the identity), so the reference
evaluator checks the rewritten network as it checks any other.

Only `weight @ v` with the weight learned per layer (a stacked parameter) and v a vector that reads
an input and nothing that changes between layers (no state, no temporary, no per-layer value, not
the layer number).
"""
from __future__ import annotations

from dataclasses import replace

import sympy as sp
from sympy import MatrixExpr, MatrixSymbol, Transpose
from sympy.core.basic import Basic

from dpc import atoms, graph
from dpc.ir import Program
from dpc.printing import math

NAME = "batch products"


class AllLayers(MatrixExpr):
    """all_layers(W @ v): W @ v, computed for every layer in one product before the loop (W untied, v the
    same in every layer); args (product,)."""

    dp_name = "all_layers"

    def __new__(cls, product):
        return Basic.__new__(cls, product)

    @property
    def shape(self):
        return self.args[0].shape

    def _latex(self, printer):  # `dpc explain --latex` (sympy's LatexPrinter calls it)
        return rf"\operatorname{{all\_layers}}\left({printer._print(self.args[0])}\right)"


AllLayers.reference = staticmethod(lambda np, value: value)  # a marker for the emitter: means its argument


def batch_products(program: Program, directive=None) -> Program:
    if program.step is None or getattr(program, "until", None) is not None:  # a fixed-point loop has no layers
        return program
    untied = {d.name for d in program.of_kind("weight") if d.per_layer and len(d.shape) == 2}
    if not untied:
        return program
    varying = ({d.name for d in program.states} | {n for n, _ in program.step.lets}
               | {d.name for d in program.decls if d.per_layer} | set(graph.per_layer_lets(program)))
    if program.first_step is not None:
        varying |= {n for n, _ in program.first_step.lets}
    inputs = {d.name for d in program.of_kind("input")}
    found: list = []

    def shared(v) -> bool:  # the same in every layer, and per sample
        names = graph.names_in(v)
        return bool(names & inputs) and not names & varying and not v.has(atoms.LAYER) and not v.has(AllLayers)

    def mark(e):
        if isinstance(e, sp.MatMul):
            coeff, mats = e.as_coeff_matrices()
            if len(mats) == 2 and mats[1].shape[1] == 1 and _untied_matrix(mats[0], untied) and shared(mats[1]):
                product = sp.MatMul(*mats)
                if product not in found:
                    found.append(product)
                return AllLayers(product) if coeff == 1 else sp.MatMul(coeff, AllLayers(product))
        if not e.args or isinstance(e, AllLayers):
            return e
        new = [mark(a) for a in e.args]
        return e if all(a is b for a, b in zip(new, e.args)) else e.func(*new)

    step = program.step.map(mark)
    first = program.first_step.map(mark) if program.first_step is not None else None
    if not found:
        return program
    lines = [f"{math(p)}: one product for all layers before the loop; layer k reads slice k" for p in found]
    lines.append("(the same FLOPs as one product per layer; the weight's gradient is one batched product too)")
    return replace(program, step=step, first_step=first).noted(NAME, *lines)


def _untied_matrix(matrix, untied) -> bool:
    """W or W.T for an untied weight W."""
    base = matrix.arg if isinstance(matrix, Transpose) else matrix
    return isinstance(base, MatrixSymbol) and base.name in untied
