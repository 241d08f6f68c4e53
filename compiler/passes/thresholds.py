"""What the LISTA-family passes share (not a pass itself): finding the thresholding atoms of an
update, seeing through its temporaries, and declaring the weights they learn."""
from __future__ import annotations

from dataclasses import replace

from dpc import atoms
from dpc.errors import DpcError
from dpc.ir import Decl, Program, Step, make_symbol

TYING = {"tied": True, "untied": False}


def fail(program: Program, message: str, span, hint: str | None = None) -> DpcError:
    return DpcError(message, span, hint).with_source(program.source)


def tying(program: Program, item, allowed: tuple[str, ...] = ()) -> bool:
    """tied/untied among a learn item's option words (untied by default); other words must be allowed."""
    tied = False
    for word, span in item[1:]:
        if word in TYING:
            tied = TYING[word]
        elif word not in allowed:
            options = ", ".join(tuple(TYING) + allowed)
            raise fail(program, f"unknown option '{word}' for learn {item[0][0]}", span, f"options: {options}")
    return tied


def map_thresholds(program: Program, fn, kinds=atoms.THRESHOLD_ATOMS) -> tuple[Step, int]:
    """Rewrite every thresholding atom (soft, softss, softpos, hard; or any of `kinds`) of the update that
    is a layer of the network, with fn(atom, index): one applied to a vector that reads an input or a
    state. A threshold of a param (soft(D, 0.5).T @ x) is a constant of the layer, not a layer, and stays
    as it is."""
    count = [0]
    per_sample = {d.name for d in program.decls if d.kind in ("input", "var")}

    def is_layer(atom):
        arg = inline_temps(program, atom.args[0])
        return arg.shape[1] == 1 and bool({getattr(s, "name", None) for s in arg.free_symbols} & per_sample)

    def visit(expr):
        if isinstance(expr, kinds) and is_layer(expr):
            count[0] += 1
            return fn(expr, count[0])
        if not expr.args:
            return expr
        new = [visit(a) for a in expr.args]
        return expr if all(a is b for a, b in zip(new, expr.args)) else expr.func(*new)

    return program.step.map(visit), count[0]


def inline_temps(program: Program, expr):
    """expr with the update's temporaries replaced by their definitions, to a fixed point."""
    temps = {make_symbol(n, program.decl(n).shape): e for n, e in program.step.lets}
    while temps and any(expr.has(t) for t in temps):
        expr = expr.xreplace(temps)
    return expr


def weight(program: Program, base: str, shape, value, directive, per_layer: bool, taken: set) -> Decl:
    """A learned weight named base (numbered if taken), initialised to value."""
    from dpc.printing import math
    per_sample = {d.name for d in program.decls if d.kind in ("input", "var", "temp")}
    read = {getattr(s, "name", None) for s in value.free_symbols} & per_sample
    if read:  # a parameter is one value for every sample: it cannot start at something computed per sample
        raise fail(program, f"{directive.label()}: {base} would start at {math(value)}, which "
                   f"reads {', '.join(sorted(read))} (a value per sample); a learned weight is one value",
                   directive.span, "make the threshold or step a constant, a hyper or a let of params")
    name = program.fresh_name(base)
    i = 1
    while name in taken:
        name = program.fresh_name(f"{base}{i}")
        i += 1
    taken.add(name)
    return Decl(name, "weight", tuple(shape), value, directive.span, trainable=True, per_layer=per_layer)


def with_learned(program: Program, step: Step, tied: bool, learned) -> Program:
    """The program with its rewritten update, its tying and the weights it learns declared."""
    p = replace(program, step=step, tied=tied)
    for d in learned:
        p = p.with_decl(d)
    return p
