"""What the LISTA-family passes share (not a pass itself): finding the thresholding atoms of an
update, seeing through its temporaries, and declaring the weights they learn."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from dpc import atoms
from dpc.errors import DpcError
from dpc.ir import Decl, Program, Step, make_symbol

TYING = {"tied": True, "untied": False}


def fail(program: Program, message: str, span, hint: str | None = None) -> DpcError:
    return DpcError(message, span, hint).with_source(program.source)


EXCEPT = "except"


@dataclass
class Tying:
    """How a learn form's weights are shared: `learn weights untied except W` gives every layer its own S
    and theta and all layers one W. `tied` is the word before `except` (untied when none is written);
    `exceptions` the names after it, (word, span): each a weight's name (W2, W_x), its name without the
    threshold's number (W_x), or its kind (W, S, b, theta, gamma), and takes the other tying."""

    tied: bool
    exceptions: tuple = ()
    used: set = field(default_factory=set)

    def per_layer(self, *names: str) -> bool:
        """Whether the weight that answers to `names` has one copy per layer."""
        hit = [word for word, _ in self.exceptions if word in names]
        self.used.update(hit)
        return self.tied if hit else not self.tied

    def finish(self, program: Program, directive, learned) -> bool | None:
        """The program's tying (True tied, False untied, None some of each), once every name after
        `except` was checked to name a weight learned."""
        for word, span in self.exceptions:
            if word not in self.used:
                raise fail(program, f"{directive.label()}: '{word}' after except names none of the weights "
                           f"learned ({', '.join(d.name for d in learned)})", span,
                           "name a weight (W2), or a kind of weight (W, S, b, theta)")
        copies = {d.per_layer for d in learned}
        return None if len(copies) > 1 else not copies.pop() if copies else self.tied

    @staticmethod
    def sharing(learned, tied: bool | None) -> str:
        """'shared by all layers', 'one copy per layer', or, for some of each, which are which."""
        if tied is not None:
            return "shared by all layers" if tied else "one copy per layer"
        shared = ", ".join(d.name for d in learned if not d.per_layer)
        return f"{shared} shared by all layers; {', '.join(d.name for d in learned if d.per_layer)} one copy per layer"


def weight_tying(program: Program, item, allowed: tuple[str, ...] = ()) -> Tying:
    """A learn form's option words: [tied | untied] (untied by default), the `allowed` words, then
    optionally `except NAME ...` (the names take the other tying; a last tying word may say which, if it
    is the other one). `except` needs the tying before it written."""
    tied, said = False, None
    words = list(item[1:])
    for i, (word, span) in enumerate(words):
        if word == EXCEPT:
            names = words[i + 1:]
            if said is None:
                raise fail(program, f"learn {item[0][0]} ... except: say how the other weights are shared "
                           "before except", span, f"e.g. learn {item[0][0]} untied except W")
            if names and names[-1][0] in TYING:
                last, last_span = names.pop()
                if TYING[last] == tied:
                    raise fail(program, f"learn {item[0][0]} {said} except ... {last}: the names after except "
                               f"take the other tying, {'untied' if tied else 'tied'}", last_span,
                               f"write learn {item[0][0]} {said} except {' '.join(w for w, _ in names) or 'W'}")
            if not names:
                raise fail(program, f"learn {item[0][0]} {said} except: name the weights that are "
                           f"{'untied' if tied else 'tied'}", span, f"e.g. learn {item[0][0]} {said} except W")
            for word2, span2 in names:
                if word2 in TYING or word2 == EXCEPT or word2 in allowed:
                    raise fail(program, f"'{word2}' after except: name weights there (W, S, theta, ...)", span2,
                               f"put the options before except: learn {item[0][0]} ... {said} except W")
            return Tying(tied, tuple(names))
        if word in TYING:
            tied, said = TYING[word], word
        elif word not in allowed:
            options = ", ".join(tuple(TYING) + allowed + (EXCEPT,))
            raise fail(program, f"unknown option '{word}' for learn {item[0][0]}", span, f"options: {options}")
    return Tying(tied)


def map_thresholds(program: Program, fn, kinds=atoms.THRESHOLD_ATOMS) -> tuple[Step, int]:
    """Rewrite every thresholding atom (soft, softss, softpos, hard; or any of `kinds`) of the update that
    is a layer of the network, with fn(atom, index): one applied to a vector that reads an input or a
    state. A threshold of a param (soft(D, 0.5).T @ x) is a constant of the layer, not a layer, and stays
    as it is."""
    count = [0]
    per_sample = {d.name for d in program.decls if d.kind in ("input", "var")}

    def is_layer(atom):
        arg = inline_temps(program, atom.args[0])
        return bool({getattr(s, "name", None) for s in arg.free_symbols} & per_sample)

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


def weight(program: Program, base: str, shape, value, directive, per_layer, taken: set, also=()) -> Decl:
    """A learned weight named base (numbered if taken), initialised to value; per_layer a bool, or the
    form's Tying, asked with the weight's name, base and the other names it answers to (`also`: its kind)."""
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
    if isinstance(per_layer, Tying):
        per_layer = per_layer.per_layer(name, base, *also)
    return Decl(name, "weight", tuple(shape), value, directive.span, trainable=True, per_layer=per_layer)


def with_learned(program: Program, step: Step, tied: bool, learned) -> Program:
    """The program with its rewritten update, its tying and the weights it learns declared."""
    p = replace(program, step=step, tied=tied)
    for d in learned:
        p = p.with_decl(d)
    return p
