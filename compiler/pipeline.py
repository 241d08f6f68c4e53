"""The pipeline: built from the program's directives and the CLI's overrides, then run.

compile: text -> AST (parser) -> IR (lower) -> passes -> IR, keeping the program after
each pass so `dpc explain` can show it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from dpc.errors import DpcError, deep_nesting
from dpc.grammar import parse
from dpc.grammar.parser import nesting_error
from dpc.ir import Directive, Program
from dpc.literals import MAX_UNROLL, MAX_UNTIL, LiteralError, check_derived_constants, parse_count, parse_value
from dpc.lower import lower_program
from dpc.passes import DERIVE_OPTIONS, IMPLICIT, PASSES, methods
from dpc.passes.backward import check_fixed_point
from dpc.passes.derive import METHODS
from dpc.requirements import check_defaults, check_learned_reach

SETTABLE = "unroll=T, or NAME=VALUE for a hyper's default"


@dataclass(frozen=True)
class Stage:
    label: str
    program: Program


def parse_overrides(items) -> dict[str, str]:
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise DpcError(f"--set expects KEY=VALUE, got '{item}'", hint=SETTABLE)
        out[key.strip()] = value.strip()
    return out


def _apply_overrides(program: Program, directives: list[Directive], overrides: dict[str, str]):
    for key, value in overrides.items():
        if key == "unroll":
            found = [d for d in directives if d.kind == "unroll"]
            if not found:
                raise DpcError("--set unroll: the program has no `unroll` to override")
            # on `unroll until(...)` it sets the loop's max, bounded as `max = ...` is (MAX_UNTIL), not layers
            high = MAX_UNROLL if any(d.count is not None for d in found) else MAX_UNTIL
            count = _override("unroll", value, lambda v: parse_count(v, "--set unroll", high))
            directives = [_unrolled(d, count) if d.kind == "unroll" else d for d in directives]
        elif program.has(key) and program.decl(key).kind == "hyper":
            number = _override(key, value, parse_value)
            program = program.with_decl(replace(program.decl(key), value=number))
        else:
            raise DpcError(f"--set: unknown key '{key}'", hint=SETTABLE)
    return program, directives


def _unrolled(directive: Directive, count: int) -> Directive:
    """`--set unroll=N` on `unroll T` makes it `unroll N`; on `unroll until(...)` it sets the most
    iterations, `max = N` (the loop still stops at convergence), as steps=N does at construction."""
    if directive.count is not None:
        return replace(directive, count=count)
    from dpc.grammar import ast
    span = directive.span
    kwargs = tuple(k for k in directive.kwargs if k[0] != "max") + (("max", ast.Number(span, str(count)), span),)
    return replace(directive, kwargs=kwargs)


# directives a program states once: a second one would silently replace the first
ONCE = {"derive": "derive", "unroll": "unroll", "backward": "backward", "output": "output"}


def _check_once(directives: list[Directive], program: Program) -> None:
    seen: dict[str, Directive] = {}
    for d in directives:
        if d.kind not in ONCE:
            continue
        first = seen.get(d.kind)
        if first is None:
            seen[d.kind] = d
            continue
        raise DpcError(f"a second `{d.kind}`: the program already says `{first.label()}` (line {first.span.line}); "
                       f"one {d.kind} per program", d.span,
                       f"delete one of the two {d.kind} lines").with_source(program.source)


def _override(key: str, value: str, parse):
    """`--set key=value` parsed by `parse`; its LiteralError as a DpcError naming the option."""
    try:
        return parse(value)
    except LiteralError as err:
        # parse_count's message already names `--set unroll`
        message = err.message if key == "unroll" else f"--set {key}: {err.message}"
        raise DpcError(message, hint=err.hint) from None


def _lookup(directive: Directive, program: Program):
    key = (directive.kind, directive.name if (directive.kind, directive.name) in PASSES else "")
    if key not in PASSES or (key[1] == "" and methods(directive.kind)):
        known = methods(directive.kind)
        raise DpcError(f"unknown {directive.kind} method '{directive.name}'", directive.name_span,
                       "known: " + ", ".join(known) if known else None).with_source(program.source)
    if directive.kind == "derive":
        _check_options(directive, program, DERIVE_OPTIONS.get(directive.name, ()))
    return PASSES[key]


def _check_options(directive: Directive, program: Program, known: tuple[str, ...]) -> None:
    """derive METHOD(...) takes named options only, each one the method reads."""
    where = f"derive {directive.name}"
    if directive.args:
        raise DpcError(f"{where} takes named options only" if known else f"{where} takes no options",
                       directive.args[0].span, f"e.g. {where}({known[0]} = ...)" if known else None
                       ).with_source(program.source)
    seen = set()
    for key, _, span in directive.kwargs:
        if key not in known:
            raise DpcError(f"{where} has no option '{key}'", span,
                           ("options: " + ", ".join(known)) if known else f"{where} takes no options"
                           ).with_source(program.source)
        if key in seen:
            raise DpcError(f"{where}: '{key}' is given twice", span).with_source(program.source)
        seen.add(key)


def _order(directives: list[Directive]) -> list[Directive]:
    """Source order, but output last: it only names the result; and `adapt gates` after any later
    `learn`: it gates the learned cell z <- soft(W x + S z, theta), whichever line comes first."""
    ordered = [d for d in directives if d.kind != "output"]
    for gates in [d for d in ordered if (d.kind, d.name) == ("adapt", "gates")]:
        learns = [i for i, d in enumerate(ordered) if d.kind == "learn" and i > ordered.index(gates)]
        if learns:
            ordered.remove(gates)
            ordered.insert(learns[-1], gates)  # just after the last learn (indices shifted by the removal)
    return ordered + [d for d in directives if d.kind == "output"]


def _finish(program: Program) -> Program:
    if program.output is None:  # the first vector var: a scalar state (FISTA's t) is internal
        vectors = [d for d in program.states if d.shape]
        if not vectors:
            raise DpcError("the program has no vector var to output (one row per sample)", program.states[0].span,
                           _vector_hint(program, program.states[0])).with_source(program.source)
        program = replace(program, output=vectors[0].name)
    if program.step is not None and program.layers is None:
        last = program.directive_spans[-1][1] if program.directive_spans else None
        raise DpcError("the program iterates but never says how often", last,
                       "add `unroll T`, e.g. unroll 16").with_source(program.source)
    if program.step is None and not program.closed_form:
        raise DpcError("the objective is never turned into a network", _objective_span(program),
                       "add a derive line, e.g. derive proxgrad(step = 1/L)").with_source(program.source)
    return program


def _vector_hint(program: Program, state) -> str:
    """The scalar var's declaration rewritten over the first dim (a literal edit: `var t : R[n]` in place of
    `var t : R`), or a template where the declaration is not written that way or no dim is declared."""
    lines = program.source.splitlines()
    line = lines[state.span.line - 1] if 0 < state.span.line <= len(lines) else ""
    written = re.search(rf"\bvar\s+{re.escape(state.name)}\s*:\s*R\b(?!\s*\[)", line)
    if written and program.dims:
        return (f"declare what is solved for as a vector: write `{written.group(0)}[{program.dims[0]}]` in place of "
                f"`{written.group(0)}`")
    return "declare what is solved for as a vector, e.g. var z : R[n] = 0"


def run_text(text: str, file: str = "<string>", overrides: dict[str, str] | None = None) -> list[Stage]:
    """Every stage of the compilation: the lowered program, then the program after each pass."""
    try:
        with deep_nesting():
            return _stages(text, file, overrides)
    except DpcError as e:
        raise e.with_source(text) from None
    except RecursionError:  # lowering, sympy and the passes recurse on an expression's depth
        raise nesting_error(text, file) from None


def _stages(text: str, file: str, overrides) -> list[Stage]:
    program, directives = lower_program(parse(text, file))
    _check_once(directives, program)
    program, directives = _apply_overrides(program, directives, overrides or {})
    stages = [Stage("source", program)]
    for directive in _order(directives):
        verdict = _convexity(program, directive)
        program = _lookup(directive, program)(program, directive)
        if verdict is not None:
            program = _state_convexity(program, directive, verdict)
        stages.append(Stage(directive.label(), program))
    for label, fn in IMPLICIT:
        folded = fn(program)
        if folded is not program:
            program = folded
            stages.append(Stage(label, program))
    program = _finish(program)
    check_fixed_point(program)
    program = check_learned_reach(program, directives)
    check_defaults(program)
    check_derived_constants(program)
    stages[-1] = Stage(stages[-1].label, program)
    return stages


def _convexity(program: Program, directive: Directive):
    """The objective's convexity (dpc.convexity) before a derive, when it has one var to judge."""
    if directive.kind != "derive" or program.objective is None or len(program.states) != 1:
        return None
    from dpc.convexity import analyse
    return analyse(program, program.states[0].symbol)


def _state_convexity(program: Program, directive: Directive, verdict) -> Program:
    """The verdict as a note of the derive (dpc explain), the program's `convexity` (dpc check), and a
    warning at a concave term for a method whose convergence needs a convex objective."""
    from dataclasses import replace as _replace
    program = _replace(program, convexity=verdict.statement()).noted(directive.label(), verdict.statement())
    method = METHODS[directive.name] if directive.name in METHODS else None
    if verdict.convex is False and method is not None and method.needs_convex:
        from dpc.printing import math
        program = program.warned(
            f"the objective is not convex in {verdict.var}: {math(verdict.term)} is concave, and "
            f"derive {directive.name} assumes a convex objective (it may diverge or stop anywhere)",
            verdict.span or directive.span,
            f"write {math(-verdict.term)} to minimise a convex objective (derive gd accepts a smooth non-convex "
            "one)")
    return program


def compile_program(text: str, file: str = "<string>", overrides: dict[str, str] | None = None) -> Program:
    return run_text(text, file, overrides)[-1].program


def _objective_span(program: Program):
    return program.term_spans[0][1] if program.term_spans else None
