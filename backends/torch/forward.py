"""The generated forward (closed form, unrolled layers or a fixed-point loop) and objective, as the plan
says: inputs checked, starts, what is computed once before the layers, then the layers."""
from __future__ import annotations

import textwrap

import sympy as sp

from dpc import atoms, graph
from dpc.algebra import is_zero
from dpc.backends.torch.code import Code, Lines, fstring_text
from dpc.backends.torch.names import Namespace
from dpc.backends.torch.printer import CALL, TorchPrinter
from dpc.ir import Step
from dpc.printing import format_constraint, math


def write_forward(code: Code, out: Lines):
    plan, p = code.plan, code.p
    inputs = [d.name for d in p.of_kind("input")]
    iterative = plan.kind != "closed"
    fp = plan.fixed_point
    keywords = ['trace=False'] + (['steps=None'] if iterative else []) + ([f"{fp.info}=False"] if fp else [])
    out(f"def forward(self, {', '.join(inputs + keywords)}):", 1)
    out_decl = p.decl(p.output)
    shape_doc = ", ".join(f"{d.name}: (batch, {', '.join(d.shape)})" for d in p.of_kind("input"))
    layers = "every layer's" if p.layers else "the"
    traced = f"the list of {layers} {p.output}" if iterative else f"[{p.output}]"
    summary = f'{shape_doc} -> {p.output}: (batch, {", ".join(out_decl.shape)}); trace=True returns {traced}.'
    if iterative:
        out(f'"""{summary}', 2)
        out("", 2)
        if fp is None:
            out("steps: run only the first `steps` layers (default: all of them, self.steps).", 2)
        else:
            out("steps: at most this many iterations (default: max, self.steps).", 2)
            out(f"{fp.info}=True: also return a dict, one entry per sample: iterations (run), residual (the last", 2)
            out("relative change of the states) and converged (met tol); with backward implicit, after backward,", 2)
            out("adjoint_iterations, adjoint_residual and adjoint_converged too. The last call's is also", 2)
            out(f"self.{fp.last_info}; a sample that stops at `steps` without meeting tol is a RuntimeWarning,", 2)
            out("once per module.", 2)
        out('"""', 2)
    else:
        out(f'"""{summary}"""', 2)
    _input_checks(code, out)
    if iterative:
        out(f"steps = self.steps if steps is None else {code.use('_layer_count')}(steps)", 2)
        if plan.per_layer:  # untied: only the layers built exist
            out("if steps > self.steps:", 2)
            out('raise ValueError(f"steps must be between 1 and {self.steps} (the layers built), got {steps}")', 3)
    printer = TorchPrinter(plan.names(None, in_forward=True), plan.batched(), keepdim=True,
                           like=inputs[0] if inputs else "_like")
    for name, c in plan.constrained.items():
        if not p.decl(name).per_layer:
            out(f"{name} = self.{name}  # from self.{c.raw}, once per call", 2)
    for name in plan.lets_before:
        decl = p.decl(name)
        out(f"{name} = {code.expr(printer, decl.value, decl)}", 2)
    if plan.learned_checks is not None:
        _learned_checks(code, out, printer)
    for name in plan.starts:
        out(f"{name} = {_start(code, p.decl(name), printer, f'{inputs[0]}.shape[0]', fp is not None)}", 2)
    if plan.kind == "closed":
        output_expr = out_decl.value if out_decl.kind == "output" else None
        for name, expr in p.closed_form:
            out(f"{name} = {_batch_shaped(code, printer, name, expr)}", 2)
        if output_expr is not None:
            out(f"{p.output} = {_batch_shaped(code, printer, p.output, output_expr)}", 2)
        out(f"return [{p.output}] if trace else {p.output}", 2)
    elif plan.kind == "fixed point":
        _fixed_point(code, out, printer, inputs[0])
    else:
        _unrolled(code, out, printer)


def _unrolled(code: Code, out: Lines, printer: TorchPrinter):
    """The layers: the first on its own where it is folded, then one loop."""
    plan = code.plan
    for name, expr in plan.hoisted:
        out(f"{name} = {code.expr(printer, expr)}  # the same in every layer: computed once", 2)
    for name, (matrix, vector) in plan.all_layers.items():
        _all_layers(code, out, printer, name, matrix, vector)
    for name, expr in plan.let_products:
        out(f"{name} = {code.expr(printer, expr)}  # the same in every layer: computed once", 2)
    if plan.copies:
        if any(n in plan.stacked for n in plan.copies):
            out("# a stack's slices, taken once: self.W[k] in the loop would make backward build a", 2)
            out("# zero gradient of the whole stack for every layer", 2)
        if any(n not in plan.stacked for n in plan.copies):
            out("# a ParameterList's copies, taken once", 2)
        copies = [f"self.{n}.unbind(0)" if n in plan.stacked else f"self.{n}" if n in plan.constrained
                  else f"{code.use('_copies')}(self.{n})" for n in plan.copies]
        out(f"{', '.join(plan.copies)} = {', '.join(copies)}", 2)
    out(f"{plan.trace} = []", 2)
    extra = {h: h for h, _ in plan.hoisted + plan.let_products}
    if plan.first is not None:
        first_extra = {**extra, **{name: f"{name}[0]" for name in plan.all_layers}}
        _layer(code, out, plan.first, "0", 2, first_extra)
        out("if trace:", 2)
        out(f"{plan.trace}.append({_output(code, plan.first, '0', first_extra)})", 3)
    extra.update({name: f"{name}[{plan.loop}]" for name in plan.all_layers})
    out(f"for {plan.loop} in range({'1, ' if plan.first is not None else ''}steps):", 2)
    _layer(code, out, plan.step, plan.loop, 3, extra)
    out("if trace:", 3)
    out(f"{plan.trace}.append({_output(code, plan.step, plan.loop, extra)})", 4)
    last = {**extra, **{name: f"{name}[steps - 1]" for name in plan.all_layers}}
    out(f"return {plan.trace} if trace else {_output(code, plan.step, 'steps - 1', last)}", 2)


def _all_layers(code: Code, out: Lines, printer: TorchPrinter, name: str, matrix, vector):
    """W @ v of every layer as one batched product, (steps, batch, rows), unbound once: layer k reads
    NAME[k]. The stacked weight is used whole when every layer runs (a slice of it would make backward
    copy its gradient into a zero tensor of the whole stack)."""
    transposed = isinstance(matrix, sp.Transpose)
    weight = (matrix.arg if transposed else matrix).name
    # whole when every layer built runs (len, not self.steps, which a layer-wise trainer may lower)
    stack = f"self.{weight} if steps == len(self.{weight}) else self.{weight}[:steps]"
    operand = f"({stack})" if transposed else f"({stack}).mT"
    out(f"# {math(sp.MatMul(matrix, vector))} of every layer in one product before the loop (batch products):", 2)
    out(f"# layer k reads {name}[k], and backward gets {weight}'s gradient from one product, already stacked", 2)
    out(f"{name} = torch.matmul({code.expr(printer, vector)}, {operand}).unbind(0)", 2)


def _fixed_point(code: Code, out: Lines, printer: TorchPrinter, like: str):
    """`unroll until`: the update as a local function, applied by _until until every sample's vector states
    change by at most tol of their norm (a converged sample keeps all its states, scalar ones included) or
    `steps` times; the per-sample iterations and residuals are kept (`last_info`), returned with
    info=True, and a sample that stops at `steps` without meeting tol is warned about once. With `backward
    implicit` the loop runs without a graph and _implicit_layer applies the update once more at the fixed
    point, with the implicit gradient (an Anderson-accelerated adjoint)."""
    plan, fp, loop = code.plan, code.plan.fixed_point, code.plan.loop
    names = [d.name for d in code.p.states]
    vectors = [d.name for d in code.p.states if d.shape]
    watched = sorted(names, key=lambda n: n not in vectors)  # the vector states first: _until watches them
    carried = fp.carried
    for name, expr in plan.hoisted:
        out(f"{name} = {code.expr(printer, expr)}  # the same in every iteration: computed once", 2)
    extra = {h: h for h, _ in plan.hoisted}
    tol = code.expr(printer, fp.tol)
    state_list = watched + ([carried] if carried else [])
    if carried:
        shape = code.p.decl(code.p.output).shape
        out(f"{carried} = {like}.new_zeros({like}.shape[0], {code.size(shape)})  # the output, kept per sample", 2)
    out(f"def {fp.iterate}({', '.join(state_list)}):", 2)
    out('"""One application of the update."""', 3)
    _layer(code, out, plan.step, loop, 3, extra)
    if carried:
        out(f"{carried} = {_output(code, plan.step, loop, extra)}", 3)
    out(f"return {', '.join(state_list)}{',' if len(state_list) == 1 else ''}", 3)
    states = f"({', '.join(state_list)}{',' if len(state_list) == 1 else ''})"
    shown = " and ".join(vectors)
    call = f"{code.use('_until')}({fp.iterate}, {states}, {len(vectors)}, {tol}, steps, trace)"
    if fp.implicit:
        out("# no graph through the iterations: the gradient comes from the fixed point (_implicit_layer)", 2)
        out("with torch.no_grad():", 2)
        out(f"{states}, {fp.report}, {fp.history} = {call}", 3)
    else:
        out(f"# until {shown} change{'s' if len(vectors) == 1 else ''} by at most {tol} of "
            f"{'its' if len(vectors) == 1 else 'their'} norm in every sample, or `steps` times", 2)
        out(f"{states}, {fp.report}, {fp.history} = {call}", 2)
    out("if not torch.compiler.is_compiling():  # eagerly: kept on the module, and a warning at `steps`", 2)
    out(f"self.{fp.last_info} = {fp.report}", 3)
    out(f"{code.use('_warn_unconverged')}(self, {fp.report}, steps, {tol})", 3)
    result = carried or _output(code, plan.step, loop, extra)
    if fp.implicit:
        (state,) = names
        out("if torch.is_grad_enabled() and not torch.compiler.is_exporting():", 2)
        out(f"{state} = {code.use('_implicit_layer')}({fp.iterate}, {state}, {tol}, steps, {fp.report})", 3)
        out("if trace:", 3)
        out(f"{fp.history}[-1] = ({state},)", 4)
    targets = ", ".join(state_list) + ("," if len(state_list) == 1 else "")
    out("if trace:", 2)
    out(f"{plan.trace} = [{result} for {targets} in {fp.history}]", 3)
    out(f"return ({plan.trace}, {fp.report}) if {fp.info} else {plan.trace}", 3)
    out(f"return ({result}, {fp.report}) if {fp.info} else {result}", 2)


def _layer_printer(code: Code, step: Step, layer: str, extra: dict[str, str]) -> TorchPrinter:
    names = code.plan.names(layer, in_forward=True)
    names.update({name: name for name in code.plan.shared})  # locals of the layer (plan.batched knows which)
    names.update(extra)
    # what was hoisted is per sample where it reads an input (D.T @ y), not where it reads params alone
    unbatched = {name for name, expr in code.plan.hoisted if not graph.names_in(expr) & code.plan.batched()}
    return TorchPrinter(names, code.plan.batched(step) | (set(extra) - unbatched), keepdim=True,
                        like=code.p.of_kind("input")[0].name)


def _layer(code: Code, out: Lines, step: Step, layer: str, indent: int, extra: dict[str, str]):
    """One layer: its per-layer lets, its temporaries, then its states' new values."""
    p = code.p
    printer = _layer_printer(code, step, layer, extra)
    for name in code.plan.lets_for_layer(step):  # computed from this layer's copies of per-layer values
        decl = p.decl(name)
        value = code.plan.layer_let_values.get(name, decl.value)  # its layer-invariant products hoisted
        out(f"{name} = {code.expr(printer, value, decl)}", indent)
    for name, expr in step.lets:  # the output may be a temporary: it too keeps the batch shape
        text = _batch_shaped(code, printer, name, expr) if name == p.output else code.expr(printer, expr)
        out(f"{name} = {text}", indent)
    order = graph.step_order(step)
    assigns = {name: _batch_shaped(code, printer, name, expr) for name, expr in step.assigns}
    if order is None:
        targets = [n for n, _ in step.assigns]
        out(f"{', '.join(targets)} = {', '.join(assigns[n] for n in targets)}", indent)
    else:
        for name in order:
            out(f"{name} = {assigns[name]}", indent)


def _output(code: Code, step: Step, layer: str, extra: dict[str, str]) -> str:
    """What the network returns after a layer: the output var, or the output expression read from the
    layer's states (and its copies of per-layer values), one row per sample."""
    decl = code.p.decl(code.p.output)
    if decl.kind != "output":
        return decl.name
    return _batch_shaped(code, _layer_printer(code, step, layer, extra), decl.name, decl.value)


def _batch_shaped(code: Code, printer: TorchPrinter, name: str, expr) -> str:
    """A state's new value, (batch, n) even where it folded to something that reads no input
    (z <- soft(0, t) in the first layer, or an update constant in the sample)."""
    text = code.expr(printer, expr)
    shape = code.p.decl(name).shape
    if not shape or printer.is_batched(expr):
        return text
    wrapped = printer.wrap(expr, CALL)  # the same code, parenthesised unless it is a call or a name
    return f"{wrapped}.expand({code.p.of_kind('input')[0].name}.shape[0], {code.size(shape)})"


def _start(code: Code, d, printer: TorchPrinter, batch: str, per_sample: bool = False) -> str:
    """A state's start: zeros, a number, or its start expression with the batch axis; a scalar state is one
    number, or (per_sample, under `unroll until`) a (batch, 1) column."""
    if not d.shape:
        value = repr(float(d.value)) if d.value is not None and d.value.is_number else code.expr(printer, d.value)
        if not per_sample:
            return value
        like = code.p.of_kind("input")[0].name
        if d.value is None or d.value.is_number:
            return f"{like}.new_full(({batch}, 1), {value if d.value is not None else '0.0'})"
        return f"({value}) * {like}.new_ones({batch}, 1)"
    size = code.size(d.shape)
    if d.value is None or is_zero(d.value):
        return f"{code.p.of_kind('input')[0].name}.new_zeros({batch}, {size})"
    text = code.expr(printer, d.value, d)
    if graph.names_in(d.value) & {i.name for i in code.p.of_kind("input")}:
        return text
    return f"({text}).expand({batch}, {size})"


def _input_checks(code: Code, out: Lines):
    p = code.p
    first = None
    call = code.plan.call_dims()
    bindings = {dim: code.plan.dim_binding(dim) for dim in call}
    for d in p.of_kind("input"):
        dims = ", ".join(dim if dim.isdigit() else f"{{{code.dim(dim)}}}" for dim in d.shape)
        mine = [dim for dim in call if bindings[dim][0] == d.name]
        if mine:  # the dims this input gives: read once its number of axes is known
            out(f"if {d.name}.dim() != {len(d.shape) + 1}:", 2)
            out(f'raise ValueError(f"{d.name} must have shape (batch, {", ".join(d.shape)}), got '
                f'{{tuple({d.name}.shape)}}")', 3)
            out(f"{', '.join(mine)} = "
                f"{', '.join(f'{d.name}.shape[{bindings[dim][1]}]' for dim in mine)}"
                "  # read at every call: any size", 2)
            for dim in mine:
                out(f"if self.{dim} is not None and {dim} != self.{dim}:", 2)
                out(f'raise ValueError(f"{d.name} must have {dim} = {{self.{dim}}} (given at construction), got '
                    f'{{{dim}}}")', 3)
        checked = [(i, dim) for i, dim in enumerate(d.shape) if (dim in p.dims or dim.isdigit())
                   and not (dim in bindings and bindings[dim] == (d.name, i + 1))]
        cond = " or ".join(([] if mine else [f"{d.name}.dim() != {len(d.shape) + 1}"]) +
                           [f"{d.name}.shape[{i + 1}] != {code.dim(dim)}" for i, dim in checked])
        if not cond:
            _dtype_check(code, out, d.name)
            if first is None:
                first = d.name
            continue
        out(f"if {cond}:", 2)
        out(f'raise ValueError(f"{d.name} must have shape (batch, {dims}), got {{tuple({d.name}.shape)}}")', 3)
        _dtype_check(code, out, d.name)
        if first is None:
            first = d.name
        else:
            out(f"if {d.name}.shape[0] != {first}.shape[0]:", 2)
            out(f'raise ValueError("{first} and {d.name} must have the same batch size")', 3)


def _dtype_check(code: Code, out: Lines, name: str):
    """Inputs in the module's dtype (that of its first tensor): a float32 batch into a float64 module
    would fail deep inside a matmul, an integer one would be silently rounded."""
    tensors = [d.name for d in code.p.of_kind("param")] + [d.name for d in code.p.of_kind("weight")]
    if not tensors:
        out(f"if not {name}.is_floating_point():", 2)
        out(f'raise ValueError(f"{name} must be a floating-point tensor, got dtype {{{name}.dtype}}")', 3)
        return
    ref = f"self.{tensors[0]}" + ("[0]" if tensors[0] in code.plan.listed else "")  # a ParameterList: layer 0's
    out(f"if {name}.dtype != {ref}.dtype:", 2)
    out(f'raise ValueError(f"{name} must have dtype {{{ref}.dtype}} (the dtype of {tensors[0]}), '
        f'got {{{name}.dtype}}")', 3)


def write_objective(code: Code, out: Lines):
    p = code.p
    used = graph.names_in(p.objective)
    args = [d.name for d in p.of_kind("input")] + [d.name for d in p.states if d.name in used]
    out(f"def objective(self, {', '.join(args)}):", 1)
    doc = f"The source objective, one value per sample: {math(p.objective)}."
    if p.constraints:  # documented choice (docs/language.md): finite values keep a loss trainable
        sets = ", ".join(format_constraint(c) for c in p.constraints)
        doc = doc[:-1] + f"; without the indicator of {sets}: a point outside gets this value, not inf."
    out(f'"""{doc}"""', 2)
    for dim in code.plan.call_dims():  # read from the inputs, as forward does
        name, axis = code.plan.dim_binding(dim)
        out(f"{dim} = {name}.shape[{axis}]", 2)
    printer = TorchPrinter(code.plan.names(None), set(args), keepdim=False, like=args[0])
    for name in code.plan.forward_lets:
        if name in used:
            decl = p.decl(name)
            out(f"{name} = {code.expr(printer, decl.value, decl)}", 2)
    out(f"return {code.expr(printer, p.objective)}", 2)


def write_properties(code: Code, out: Lines):
    """Each constrained learned value (plan.constrained) by its own name: log(1 + exp(raw)), then
    clamped by its bounds; with constrain=False, the raw parameter itself (for a per-layer value, a list of
    every layer's, layer k's at [k])."""
    plan, p = code.plan, code.p
    ns = Namespace(d.name for d in p.decls)
    k, raw, value, copies, values = (ns.fresh(n) for n in ("k", "raw", "value", "copies", "values"))
    stored = plan.names_used_after_init()
    for name, c in plan.constrained.items():
        d = p.decl(name)
        wants = [RELATIONS_SHOWN[c.relation]] if c.relation else []
        wants += [f"{'below' if b.upper else 'above'} {math(b.bound)}" for b in c.bounds]
        how = f"log(1 + exp(self.{c.raw}))" if c.relation else f"self.{c.raw}"
        how += ", clamped to its bound" if c.bounds else ""
        reasons = "; ".join(dict.fromkeys(([c.why] if c.why else []) + [b.why for b in c.bounds]))
        out("@property", 1)
        out(f"def {name}(self):", 1)
        layer_text = "Every layer's " if d.per_layer else ""
        doc = (f'{layer_text}{name}, {" and ".join(wants)} whatever training does ({reasons}): '
               f'{how}; with {plan.constrain}=False, self.{c.raw} itself.')
        out('"""' + "\n".join(textwrap.wrap(doc, 100)) + '"""', 2)
        others = sorted({n for b in c.bounds for n in graph.names_in(_expand_lets(plan, b.bound, stored))
                         if n in plan.constrained and p.decl(n).per_layer} - {name})
        names = plan.names(None)
        for n in plan.constrained:
            names[n] = f"self.{n}"
        names.update({n: f"{n}[{k}]" for n in others})
        printer = TorchPrinter(names, set(), keepdim=False, like=f"self.{c.raw}" if not d.per_layer else raw)

        def clamp(target, indent):
            for b in c.bounds:
                bound = code.expr(printer, _expand_lets(plan, b.bound, stored))
                bound = f"(1 - 1e-6) * ({bound})" if b.strict else bound
                out(f"{target} = {target}.clamp({'max' if b.upper else 'min'}={bound})", indent)

        if d.per_layer:
            out(f"{copies} = {code.use('_copies')}(self.{c.raw})", 2)
            out(f"if not self.{plan.constrain}:", 2)
            out(f"return list({copies})", 3)
            for n in others:
                out(f"{n} = self.{n}", 2)
            if not c.bounds:
                out(f"return [{code.use('_positive')}({raw}) for {raw} in {copies}]", 2)
                out()
                continue
            out(f"{values} = []", 2)
            out(f"for {k}, {raw} in enumerate({copies}):", 2)
            first = f"{code.use('_positive')}({raw})" if c.relation else raw
            out(f"{value} = {first}", 3)
            clamp(value, 3)
            out(f"{values}.append({value})", 3)
            out(f"return {values}", 2)
            out()
        else:
            out(f"if not self.{plan.constrain}:", 2)
            out(f"return self.{c.raw}", 3)
            if not c.bounds:
                out(f"return {code.use('_positive')}(self.{c.raw})", 2)
                out()
                continue
            out(f"{value} = {code.use('_positive')}(self.{c.raw})" if c.relation else f"{value} = self.{c.raw}", 2)
            clamp(value, 2)
            out(f"return {value}", 2)
            out()


RELATIONS_SHOWN = {"positive": "> 0", "nonnegative": ">= 0"}


def _learned_checks(code: Code, out: Lines, printer: TorchPrinter):
    """The requirements on learned values (plan.learned_checks), checked eagerly when a learned tensor changed
    since the last check that passed: the constructor's ValueError, or its warning for a caution, with the
    values as trained. Each reads forward's lets where it can (L, already computed); an opnorm forward does
    not compute is estimated (runtime._opnorm_estimate): from below, so a bound it breaks is broken."""
    from dpc.requirements import RELATIONS, with_lets
    plan, p = code.plan, code.p
    lc = plan.learned_checks
    tensors = ", ".join(f"self.{plan.storage(n)}" for n in lc.tensors)
    out(f"if self.{lc.keyword} and not torch.compiler.is_compiling():  # the learned values' requirements", 2)
    out(f"{lc.local} = {code.use('_learned_stamp')}({tensors})", 3)
    out(f"if {lc.local} != self.{lc.stamp}:  # changed since the last check (a training step)", 3)
    out("with torch.no_grad():", 4)
    before = [p.decl(n) for n in plan.lets_before if not p.decl(n).shape]
    expanded = [(with_lets(p, d.value), d.symbol) for d in reversed(before)]
    stored = plan.names_used_after_init()
    norms: dict = {}
    names = dict(printer.names)
    prepared = []
    for req, caution, kept in lc.checks:
        expr = with_lets(p, req.expr)
        for value, symbol in expanded:
            expr = expr.xreplace({value: symbol})
        for _ in range(len(p.decls) + 1):  # the lets forward has not computed by now: their definitions
            lets = {d.symbol: d.value for d in p.of_kind("let") if d.symbol in expr.free_symbols
                    and d.name not in plan.lets_before and not (d.name in plan.fixed_lets and d.name in stored)}
            if not lets:
                break
            expr = expr.xreplace(lets)
        for node in sorted(expr.atoms(atoms.OpNorm), key=sp.default_sort_key):
            if node not in norms:
                norms[node] = sp.Symbol(f"_opnorm{len(norms)}")
                names[norms[node].name] = f"{lc.opnorms}[{len(norms) - 1}]"
        prepared.append((req, caution, kept, expr.xreplace(norms)))
    checker = TorchPrinter(names, printer.batched, keepdim=printer.keepdim, like=printer.like)
    if norms:
        estimates = ", ".join(f"{code.use('_opnorm_estimate')}({code.expr(checker, node.args[0])}, "
                              f"self.{lc.cache}, {i})" for i, node in enumerate(norms))
        out(f"{lc.opnorms} = [{estimates}]  # opnorm from below: warm-started power iterations", 5)
    for req, caution, kept, expr in prepared:
        value = f"float({code.expr(checker, expr)})"
        condition = {"positive": f'not 0 < {value} < float("inf")',
                     "nonnegative": f'not 0 <= {value} < float("inf")',
                     "nonzero": f"{value} == 0"}[req.relation]
        if kept:
            condition = f"not self.{plan.constrain} and {condition}"
        must = "should be" if caution else "must be"
        text = fstring_text(f"{math(req.expr)} {must} {RELATIONS[req.relation]} ({req.why}), got ")
        tail = fstring_text(f" with the learned values as trained (forward's check; "
                            f"{lc.keyword}=False turns it off)")
        out(f"if {condition}:", 5)
        if caution:
            out(f'{code.use("_caution")}(self, "{lc.warned}", f"{text}{{{value}}}{tail}")', 6)
        else:
            out(f'raise ValueError(f"{text}{{{value}}}{tail}")', 6)
    out(f"self.{lc.stamp} = {lc.local}", 4)


def _expand_lets(plan, expr, stored):
    """expr with the lets that the module does not keep on self replaced by their definitions."""
    p = plan.p
    for _ in range(len(p.decls) + 1):
        lets = {d.symbol: d.value for d in p.of_kind("let") if d.symbol in expr.free_symbols
                and not (d.name in plan.fixed_lets and d.name in stored)}
        if not lets:
            return expr
        expr = expr.xreplace(lets)
    return expr
