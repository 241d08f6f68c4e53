"""The generated __init__: check and copy the tensors given, bind dims, check hypers and lets against what
the derivation assumed (dpc.requirements), compute the constant lets, factor what forward solves with,
and build the learned weights at their values in the algorithm."""
from __future__ import annotations

import sympy as sp

from dpc import atoms, graph
from dpc.backends.torch.code import Code, Lines, fstring_text
from dpc.backends.torch.printer import TorchPrinter
from dpc.lower import PARAM_INITS
from dpc.printing import math
from dpc.requirements import RELATIONS, all_requirements


def write_init(code: Code, out: Lines):
    plan, p = code.plan, code.p
    params, hypers, like = p.of_kind("param"), p.of_kind("hyper"), plan.like
    args = [f"{d.name}=None" if d.init else d.name for d in params]
    args += [f"{d.name}={_number(d.value)}" for d in hypers]
    args += plan.unbound_dims()
    args += [f"{dim}=None" for dim in plan.init_dims()]  # the sizes of a param built by its initialisation
    args += [f"{dim}=None" for dim in plan.call_dims()]  # read from the inputs; given, it is checked there
    if p.layers:
        args.append(f"steps={p.layers}")
    if plan.constrained:
        args.append(f"{plan.constrain}=True")
    if plan.learned_checks is not None:
        args.append(f"{plan.learned_checks.keyword}=True")
    out(f"def __init__(self, *, {', '.join(args)}):", 1)
    out("super().__init__()", 2)
    bound: dict[str, str] = {}
    for d in params:
        if not d.init:
            _param_check(out, d, bound)
    for d in params:  # after the given ones: their dims are bound
        if d.init:
            _param_init(code, out, d, bound, next((q.name for q in params if not q.init), None))
            _param_check(out, d, bound, keywords=set(plan.init_dims()))
    for dim in plan.unbound_dims():
        out(f"{dim} = int({dim})", 2)
        bound[dim] = dim
    for dim in p.dims:
        if dim in bound:
            out(f"self.{dim} = {dim}", 2)
    for dim in plan.call_dims():
        out(f"self.{dim} = None if {dim} is None else int({dim})  # None: any size, read at every call", 2)
    if p.layers:
        out(f"self.steps = steps = {code.use('_layer_count')}(steps)", 2)
    if not params:
        out("_like = torch.empty(0)  # no tensor given: new tensors take the default dtype, on the cpu", 2)
    printer = TorchPrinter(plan.init_names(), set(), keepdim=False, like=like)
    scalar = f"dtype={like}.dtype, device={like}.device"
    if plan.constrained:
        names = ", ".join(plan.constrained)
        out(f"# {names}: learned through a parametrisation that keeps {'it' if len(plan.constrained) == 1 else 'each'} "
            f"valid (self.{plan.constrained[next(iter(plan.constrained))].raw}, ...);", 2)
        out(f"# {plan.constrain}=False keeps the value itself as the parameter", 2)
        out(f"self.{plan.constrain} = {plan.constrain} = bool({plan.constrain})", 2)
    lc = plan.learned_checks
    if lc is not None:
        out(f"# forward checks the requirements that read learned values when they changed (eagerly);", 2)
        out(f"# {lc.keyword}=False turns that off", 2)
        out(f"self.{lc.keyword} = bool({lc.keyword})", 2)
        out(f"self.{lc.stamp} = None  # the learned tensors at the last check that passed", 2)
        out(f"self.{lc.cache} = {{}}  # opnorm estimates' singular vectors, warm starts", 2)
    for d in hypers:
        if d.name in plan.constrained:
            c = plan.constrained[d.name]
            value = f"torch.as_tensor(float({d.name}), {scalar})"
            if c.relation is not None:  # the raw r with log(1 + exp(r)) = the value given
                value = f"{code.use('_learned')}({d.name}, {like}, {plan.constrain})"
            if d.per_layer:
                out(f"self.{c.raw} = {_per_layer(code, d.name, value)}", 2)
                if d.name in plan.given:
                    out(f"self.{plan.given[d.name]} = float({d.name})  # read outside the layers", 2)
            else:
                out(f"self.{c.raw} = nn.Parameter({value})", 2)
        elif d.per_layer:  # learn NAME untied: one copy per layer, each the value given
            out(f"self.{d.name} = {_per_layer(code, d.name, f'torch.as_tensor(float({d.name}), {scalar})')}", 2)
            if d.name in plan.given:
                out(f"self.{plan.given[d.name]} = float({d.name})  # read outside the layers", 2)
        elif d.trainable:
            out(f"self.{d.name} = nn.Parameter(torch.as_tensor(float({d.name}), {scalar}))", 2)
        else:
            out(f"self.{d.name} = {d.name} = float({d.name})", 2)
    for d in params:
        if d.per_layer:
            out(f"self.{d.name} = {_per_layer(code, d.name, d.name)}", 2)
            if d.name in plan.given:
                out(f'self.register_buffer("{plan.given[d.name]}", {d.name})  # read outside the layers', 2)
        elif d.trainable:
            out(f"self.{d.name} = nn.Parameter({d.name})", 2)
        else:
            out(f'self.register_buffer("{d.name}", {d.name})', 2)
    _lets(code, out, printer)
    if p.of_kind("weight"):
        out("# learned weights, initialised to their values in the algorithm", 2)
    fit_errors: dict[str, list[str]] = {}
    for w in p.of_kind("weight"):
        if isinstance(w.value, atoms.RbfFit) and w.value.has(atoms.LAYER) and w.per_layer:
            # the function replaced changes with the layer (derive hqs's threshold lam/beta_t): one fit per layer
            target, r, rbfs, rows, kind = w.value.args
            printer.names[atoms.LAYER.name] = "(layer + 1)"
            try:
                fit = (f"{code.use('_rbf_fit')}({code.expr(printer, target, w)}, {float(r)!r}, {int(rbfs)}, "
                       f"{code.expr(printer, rows, w)})")
            finally:
                printer.names.pop(atoms.LAYER.name)
            out(f"{w.name}_fits = [{fit} for layer in range(steps)]  # the function {w.name} replaces at each layer", 2)
            out(f"{w.name}_fit_error = max(e for _, e in {w.name}_fits)", 2)
            fit_errors.setdefault(_RBF_ATTRIBUTE[int(kind)], []).append(w.name)
            tensor = f"torch.stack([f for f, _ in {w.name}_fits]).to({scalar})"
            if w.name in plan.stacked:
                out(f"self.{w.name} = nn.Parameter({tensor})", 2)
            else:
                out(f"self.{w.name} = nn.ParameterList(nn.Parameter(f.clone()) for f in {tensor})", 2)
            continue
        if isinstance(w.value, atoms.RbfFit):  # learn influence / shrink: the fit runs here, from the hypers' values
            target, r, rbfs, rows, kind = w.value.args
            out(f"{w.name}_target = {code.expr(printer, target, w)}  # the function {w.name} replaces, on its grid", 2)
            out(f"{w.name}, {w.name}_fit_error = {code.use('_rbf_fit')}({w.name}_target, {float(r)!r}, {int(rbfs)}, "
                f"{code.expr(printer, rows, w)})", 2)
            tensor = f"{w.name}.to({scalar})"
            fit_errors.setdefault(_RBF_ATTRIBUTE[int(kind)], []).append(w.name)
            out(f"self.{w.name} = {_per_layer(code, w.name, tensor) if w.per_layer else f'nn.Parameter({tensor})'}", 2)
            continue
        value = code.expr(printer, w.value, w)
        tensor = value
        if not graph.names_in(w.value) & plan.init_tensors and not isinstance(w.value, atoms.InitialValue):
            tensor = f"torch.as_tensor({value}, {scalar})"  # a number: give it the params' dtype
        if w.per_layer:
            out(f"self.{w.name} = {_per_layer(code, w.name, tensor)}", 2)
        else:
            tensor = tensor if tensor.isidentifier() else f"({tensor})"  # 2 * C / tau: clone the whole value
            out(f"self.{w.name} = nn.Parameter({tensor}.clone())", 2)
    for attribute, names in fit_errors.items():  # the initial fits' largest errors on their grids
        out(f"self.{attribute} = {{{', '.join(f'{n!r}: {n}_fit_error' for n in names)}}}", 2)


_RBF_ATTRIBUTE = {0: "influence_fit_error", 1: "shrink_fit_error"}  # learn influence, learn shrink (RbfFit's kind)


def _lets(code: Code, out: Lines, printer: TorchPrinter):
    """The lets computed at construction, each followed by the checks its value completes; the constant
    ones forward reads are kept (a buffer where a tensor), the matrices it solves with factored."""
    plan, p = code.plan, code.p
    needed = plan.names_used_after_init()
    checks = all_requirements(p) + [_Caution(r) for r in p.cautions]
    # the dims are bound by now: a requirement that reads one (opnorm(c*eye(n) + D.T @ D)) is checked too
    known = {d.name for d in p.of_kind("param") + p.of_kind("hyper")} | set(p.dims)
    checks = _checks(code, out, printer, checks, known)
    for name in plan.init_lets:
        decl = p.decl(name)
        if name not in plan.init_tensors and _may_overflow(decl.value):
            # a Python float's ** raises OverflowError where * and / give inf: say which let
            text = f"{name} = {math(decl.value)} is past float64's range with these values"
            out("try:", 2)
            out(f"{name} = {code.expr(printer, decl.value, decl)}", 3)
            out("except OverflowError:", 2)
            out(f"raise ValueError({text!r}) from None", 3)
        else:
            out(f"{name} = {code.expr(printer, decl.value, decl)}", 2)
        known.add(name)
        checks = _checks(code, out, printer, checks, known)
        if name not in needed or name not in plan.fixed_lets:  # a let of a learned value is recomputed in forward
            continue
        if name in plan.init_tensors:
            out(f'self.register_buffer("{name}", torch.as_tensor({name}))', 2)
        else:
            out(f"self.{name} = {name}", 2)
        factor = plan.factors.get(name)
        if factor is not None and factor.cholesky:
            out(f'self.register_buffer("{factor.factor}", {code.use("_cholesky")}({name}, "{name}"))'
                "  # factored once", 2)
        elif factor is not None:
            out(f"{factor.factor}, {factor.pivots} = torch.linalg.lu_factor({name})  # factored once", 2)
            out(f'self.register_buffer("{factor.factor}", {factor.factor})', 2)
            out(f'self.register_buffer("{factor.pivots}", {factor.pivots})', 2)


def _checks(code: Code, out: Lines, printer: TorchPrinter, checks: list, known: set[str]) -> list:
    """The requirements on hypers and lets (dpc.requirements) whose values are known by now, each a
    ValueError naming the value; returns those still waiting for a let."""
    waiting = []
    for check in checks:
        caution = isinstance(check, _Caution)
        req = check.req if caution else check
        if not graph.names_in(req.expr) <= known:
            waiting.append(check)
            continue
        value = f"float({code.expr(printer, req.expr)})"
        condition = {"positive": f'not 0 < {value} < float("inf")',
                     "nonnegative": f'not 0 <= {value} < float("inf")',
                     "nonzero": f"{value} == 0"}[req.relation]
        text = fstring_text(f"{math(req.expr)} {'should' if caution else 'must'} be {RELATIONS[req.relation]} "
                            f"({req.why}), got ")
        out(f"if {condition}:", 2)
        if caution:  # a warning, as dpc compile's when the value is known there
            lc = code.plan.learned_checks
            flag = lc.warned if lc is not None else "_cautioned"
            out(f'{code.use("_caution")}(self, "{flag}", f"{text}{{{value}}}")', 3)
        else:
            out(f'raise ValueError(f"{text}{{{value}}}")', 3)
    return waiting


class _Caution:
    """A caution (ir.Program.cautions) among the constructor's checks: a warning where a requirement raises."""

    def __init__(self, req):
        self.req = req


def _param_init(code: Code, out: Lines, d, bound: dict[str, str], like: str | None):
    """`param K : R[k, s, s] = dct | random`, K not given: built from its sizes (keywords, or dims bound by
    the params given), in the default dtype or that of the first param given."""
    name, shape = d.name, d.shape
    missing = [dim for dim in dict.fromkeys(shape) if not dim.isdigit() and dim not in bound]
    sizes = [dim if dim.isdigit() or dim in bound else f"int({dim})" for dim in shape]
    out(f"if {name} is None:  # not given: {name} = {d.init}", 2)
    if missing:
        cond = " or ".join(f"{dim} is None" for dim in missing)
        text = (f"give {name}, or its size{'s' if len(missing) > 1 else ''} {' and '.join(missing)} to build it "
                f"(param {name} = {d.init}: {PARAM_INITS[d.init]})")
        out(f"if {cond}:", 3)
        out(f"raise ValueError({text!r})", 4)
    if d.init == "dct":
        value = f"{code.use('_dct_filters')}({', '.join(sizes)})"
    else:
        value = f"{code.use('_random_filters')}(({', '.join(sizes)},))"
    out(f"{name} = {value}" + (f".to({like})" if like else ""), 3)


def _param_check(out: Lines, d, bound: dict[str, str], keywords: set[str] = frozenset()):
    name, shape = d.name, d.shape
    # a copy: training a learned param must not write into the caller's tensor
    out(f"{name} = torch.as_tensor({name}).detach().clone()", 2)
    out(f"if not {name}.is_floating_point():", 2)
    out(f"{name} = {name}.to(torch.get_default_dtype())", 3)
    kind = {0: "a scalar", 1: "a vector", 2: "a matrix", 3: "an image stack"}[len(shape)]
    out(f"if {name}.dim() != {len(shape)}:", 2)
    out(f'raise ValueError(f"{name} must be {kind} R[{", ".join(shape)}], got shape {{tuple({name}.shape)}}")', 3)
    for axis, dim in enumerate(shape):
        here = f"{name}.shape[{axis}]"
        if dim.isdigit():
            out(f"if {here} != {dim}:", 2)
            out(f'raise ValueError(f"{name} must have {dim} on axis {axis}, got {{{here}}}")', 3)
        elif dim in bound:
            out(f"if {here} != {dim}:", 2)
            out(f'raise ValueError(f"dim {dim} is {{{dim}}} (from {bound[dim]}) but {name}.shape[{axis}] '
                f'is {{{here}}}")', 3)
        else:
            if dim in keywords:  # given beside the tensor: it must agree
                out(f"if {dim} is not None and int({dim}) != {here}:", 2)
                out(f'raise ValueError(f"{dim} is {{{dim}}} but {name}.shape[{axis}] is {{{here}}}")', 3)
            out(f"{dim} = {here}", 2)
            bound[dim] = f"{name}.shape[{axis}]"


def _per_layer(code: Code, name: str, value: str) -> str:
    """The constructor's code for a per-layer value starting at `value`: a stack or a ParameterList."""
    if name in code.plan.stacked:
        return f"nn.Parameter({code.use('_layers')}({value}, steps))"
    frozen = ", first_read=False" if name in code.plan.frozen_first else ""
    return f"{code.use('_layer_list')}({value}, steps{frozen})"


def _may_overflow(expr) -> bool:
    """Whether a scalar expression holds a power other than a reciprocal (the ones a Python float raises
    OverflowError for)."""
    return any(not (p.args[1].is_number and p.args[1] == -1) for p in expr.atoms(sp.Pow))


def _number(value) -> str:
    return repr(float(value)) if not value.is_Integer else repr(float(int(value)))
