"""relax TARGET -> METHOD(args): replace a constraint set or an objective atom by its relaxation.

`relax onehot -> softmax(tau)` turns `s in onehot` into `s in simplex` and adds
-tau*entropy(s) to the objective; `relax norm0 -> norm1` rewrites the atom. The rules,
each with its derivation, are the table in relaxations.py; this pass finds what the rule
applies to, lowers its arguments and records the relaxed problem. `derive closed` then
finds the minimiser.
"""
from __future__ import annotations

from dataclasses import replace

from dpc import relaxations
from dpc.errors import DpcError
from dpc.ir import Constraint, Directive, Program
from dpc.lower import lower_scalar
from dpc.printing import format_constraint, math


def _fail(program: Program, message: str, span, hint: str | None = None) -> DpcError:
    return DpcError(message, span, hint).with_source(program.source)


def relax(program: Program, directive: Directive) -> Program:
    rule = _rule(program, directive)
    program, args = _arguments(program, directive, rule)
    if program.objective is None:
        raise _fail(program, "relax needs a `minimize` objective", directive.span)
    if rule.kind == "atom":
        return _relax_atom(program, directive, rule)
    return _relax_set(program, directive, rule, args)


def _rule(program: Program, directive: Directive) -> relaxations.Rule:
    target, method = directive.target, directive.name
    rule = relaxations.RULES.get((target, method))
    if rule is not None:
        return rule
    if target in relaxations.targets():
        raise _fail(program, f"{target} does not relax to {method}", directive.name_span,
                    f"{target} relaxes to " + " or ".join(relaxations.methods_for(target)))
    raise _fail(program, f"no relaxation of '{target}' is known", directive.target_span,
                f"{method} relaxes " + ", ".join(relaxations.targets_for(method)))


def _arguments(program: Program, directive: Directive, rule: relaxations.Rule) -> tuple[Program, dict]:
    """The rule's arguments as lowered, each required positive (a temperature) at construction."""
    names = [n for n, _ in rule.params]
    signature = f"{rule.method}({', '.join(names)})" if names else rule.method
    if len(directive.args) > len(names):
        raise _fail(program, f"{signature} takes {len(names)} argument{'s' if len(names) != 1 else ''}, "
                    f"got {len(directive.args)}", directive.name_span)
    given = {n: node for n, node in zip(names, directive.args)}
    for key, node, span in directive.kwargs:
        if key not in names:
            raise _fail(program, f"{signature} has no argument '{key}'", span)
        if key in given:
            raise _fail(program, f"{signature}: '{key}' is given twice", span)
        given[key] = node
    values = {}
    for name, default in rule.params:
        if name not in given:
            if default is None:
                raise _fail(program, f"{rule.method} needs {name}: relax {rule.target} -> {signature}",
                            directive.name_span, f"e.g. relax {rule.target} -> {rule.method}(0.1)")
            values[name] = default
            continue
        value = lower_scalar(program, given[name], name)
        if value.is_number and not value > 0:
            raise _fail(program, f"{name} must be positive, got {math(value)}", given[name].span)
        values[name] = value
        program = program.requiring(value, "positive", f"{rule.method}'s {name}", given[name].span)
    return program, values


def _relax_set(program: Program, directive: Directive, rule: relaxations.Rule, args: dict) -> Program:
    found = [c for c in program.constraints if c.set == rule.target]
    if not found:
        have = ", ".join(format_constraint(c) for c in program.constraints)
        raise _fail(program, f"relax {rule.target}: no var is constrained to {rule.target}", directive.target_span,
                    f"the constraints are: {have}" if have else
                    f"the program has no constraint; write e.g. `subject to s in {rule.target}`")
    objective, constraints, spans = program.objective, [], list(program.term_spans)
    lines = [rule.summary]
    for c in program.constraints:
        if c.set != rule.target:
            constraints.append(c)
            continue
        var = program.decl(c.var).symbol
        relaxed = rule.apply(var, *args.values())
        new = Constraint(c.var, relaxed.set, relaxed.args, c.span)
        constraints.append(new)
        objective = objective + relaxed.term
        spans.append((relaxed.term, directive.span))
        added = f"- {math(-relaxed.term)}" if relaxed.term.could_extract_minus_sign() else f"+ {math(relaxed.term)}"
        lines.append(f"{format_constraint(c)} -> {format_constraint(new)}, objective {added}")
    lines.append(f"minimize {math(objective)}")
    return replace(program, objective=objective, constraints=tuple(constraints),
                   term_spans=tuple(spans)).noted(directive.label(), *lines)


def _relax_atom(program: Program, directive: Directive, rule: relaxations.Rule) -> Program:
    objective = rule.apply(program.objective)
    if objective == program.objective:
        raise _fail(program, f"relax {rule.target}: the objective has no {rule.target}", directive.target_span,
                    f"the objective is {math(program.objective)}")
    spans = tuple((rule.apply(t), s) for t, s in program.term_spans)
    return replace(program, objective=objective, term_spans=spans).noted(
        directive.label(), rule.summary, f"minimize {math(objective)}")

