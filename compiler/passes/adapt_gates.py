"""adapt gates [(init = xavier | ista)]: adaptive ISTA as SC2Net's Sparse LSTM (Zhou et al., AAAI 2018).

The update z <- soft(u, theta), u the ISTA pre-activation (W x + S z after `learn weights`),
becomes an LSTM cell without an output gate, a new state c (the cell) starting at 0:

    i = sigmoid(U_i x + V_i z + b_i)      input gate: a per-coordinate step
    f = sigmoid(U_f x + V_f z + b_f)      forget gate: a per-coordinate momentum
    c <- f * c + i * u
    z <- soft(c, theta)

It gates the cell as `learn weights` leaves it, whichever of the two lines comes first (the
pipeline runs it after a later `learn`), and its gate weights are shared or per layer as that
`learn weights` says (shared when there is none).

init = xavier (the default, as SC2Net's code): U and V uniform Xavier, b zero, drawn at
construction from torch's generator.

init = ista: the untrained cell is ISTA exactly (i = 1, f = 0) and every parameter still gets a
gradient. A sigmoid is 1 or 0 only at an infinite bias, where its gradient vanishes (a bias of
+-37 rounds to 1/0 in float64, with gradients near 1e-16: the gates could never learn), so the
gates carry learned amplitudes a_i, a_f (vectors, starting at 0):

    i = 1 + a_i * (sigmoid(U_i x + V_i z + b_i) - 1)
    f = a_f * sigmoid(U_f x + V_f z + b_f)

with U, V, b starting at 0. At a_i = a_f = 1 this is the SC2Net cell above; at 0 it is ISTA,
and the gradients of a_i, a_f there are those of the sigmoids' 1/2, so the gates open as they learn.
"""
from __future__ import annotations

from dataclasses import replace

import sympy as sp
from sympy import HadamardProduct, MatAdd, ZeroMatrix

from dpc import atoms
from dpc.grammar import ast
from dpc.ir import Decl, Directive, Program, Step, dim_symbol, make_symbol
from dpc.passes.thresholds import fail
from dpc.printing import format_step, math

INITS = ("xavier", "ista")


def adapt_gates(program: Program, directive: Directive) -> Program:
    init = _init(program, directive)
    step = program.step
    if step is None:
        raise fail(program, "adapt gates needs an update", directive.span,
                   "put it after derive and learn weights, e.g. derive proxgrad(step = 1/L)")
    cells = [(name, e) for name, e in step.assigns if type(e) in (atoms.Soft, atoms.SoftSS)]
    in_lets = any(isinstance(a, atoms.THRESHOLD_ATOMS) for _, e in step.lets for a in sp.preorder_traversal(e))
    if len(cells) != 1 or in_lets:
        raise fail(program, "adapt gates needs an update with one soft threshold, z <- soft(u, theta)",
                   directive.span, "write it as one state's update (ISTA or LISTA), not FISTA's")
    z_name, soft = cells[0]
    z = program.decl(z_name)
    if len(z.shape) != 1:
        raise fail(program, f"adapt gates gates a vector state, but {z_name} is a matrix "
                   f"(R[{', '.join(z.shape)}])", directive.span,
                   "delete the adapt gates line (its gates are per coordinate of a vector)")
    inputs = [d for d in program.of_kind("input") if len(d.shape) == 1]  # U @ x of the vector inputs
    per_layer = program.tied is False
    shape, rows = z.shape, z.shape[0]

    p = program
    c_name = p.fresh_name("c")
    p = p.with_decl(Decl(c_name, "var", shape, ZeroMatrix(*z.symbol.shape), directive.span, note="LSTM cell"))
    gates, decls = {}, []
    matrices = "xavier" if init == "xavier" else "zeros"
    for gate in ("i", "f"):
        terms = []
        for x in inputs:
            U = _weight(p, decls, f"U_{gate}" + ("" if len(inputs) == 1 else f"_{x.name}"), (rows, x.shape[0]),
                        matrices, per_layer, directive)
            terms.append(U * x.symbol)
        V = _weight(p, decls, f"V_{gate}", (rows, rows), matrices, per_layer, directive)
        b = _weight(p, decls, f"b_{gate}", (rows,), "zeros", per_layer, directive)
        pre = MatAdd(*terms, V * z.symbol, b)
        gate_value = atoms.Sigmoid(pre)
        ones = atoms.Ones(*z.symbol.shape)
        if init == "ista":
            a = _weight(p, decls, f"a_{gate}", (rows,), "zeros", per_layer, directive)
            gate_value = (ones + HadamardProduct(a, gate_value - ones) if gate == "i"
                          else HadamardProduct(a, gate_value))
        name = p.fresh_name(gate)
        p = p.with_decl(Decl(name, "temp", shape, None, directive.span))
        gates[gate] = (name, gate_value)
    c_next = p.fresh_name(f"{c_name}_next")
    p = p.with_decl(Decl(c_next, "temp", shape, None, directive.span))
    i, f, c = (make_symbol(gates["i"][0], shape), make_symbol(gates["f"][0], shape), make_symbol(c_name, shape))
    cell = HadamardProduct(f, c) + HadamardProduct(i, soft.args[0])
    new_step = Step(
        lets=step.lets + (gates["i"], gates["f"], (c_next, cell)),
        assigns=tuple((n, soft.func(make_symbol(c_next, shape), *soft.args[1:]) if n == z_name else e)
                      for n, e in step.assigns) + ((c_name, make_symbol(c_next, shape)),),
    )
    for d in decls:
        p = p.with_decl(d)
    lines = [f"{d.name} = {math(d.value)}" for d in decls]
    sharing = "one copy per layer" if per_layer else "shared by all layers"
    how = ("init = ista: a_i = a_f = 0, so i = 1 and f = 0 and the untrained cell is ISTA"
           if init == "ista" else "init = xavier: U, V Xavier-uniform, biases zero (as SC2Net)")
    return replace(p, step=new_step).noted(
        directive.label(), f"cell {c_name} (starts at 0); input gate {gates['i'][0]}, forget gate {gates['f'][0]}; "
                           "no output gate", how, f"gate weights: {sharing}", *lines, *format_step(new_step, ""))


def _weight(program, decls, base, shape, value, per_layer, directive):
    """Declare a learned gate weight starting at value (xavier or zeros); returns its symbol."""
    name = program.fresh_name(base)
    dims = [dim_symbol(s) for s in shape] + ([sp.Integer(1)] if len(shape) == 1 else [])
    start = atoms.Xavier(*dims) if value == "xavier" else atoms.Zeros(*dims)
    decls.append(Decl(name, "weight", tuple(shape), start, directive.span, trainable=True, per_layer=per_layer))
    return make_symbol(name, shape)


def _init(program, directive) -> str:
    init = "xavier"
    for key, node, span in directive.kwargs:
        if key != "init":
            raise fail(program, f"adapt gates has no option '{key}'", span, "option: init = xavier or init = ista")
        if not isinstance(node, ast.Name) or node.id not in INITS:
            raise fail(program, "adapt gates: init must be xavier or ista", node.span,
                       "init = ista starts from ISTA exactly; init = xavier (the default) as SC2Net")
        init = node.id
    if directive.args:
        raise fail(program, "adapt gates takes named options only", directive.span, "e.g. adapt gates(init = ista)")
    return init
