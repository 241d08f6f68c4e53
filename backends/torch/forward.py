"""The generated forward (closed form, unrolled layers or a fixed-point loop) and objective, as the plan
says: inputs checked, starts, what is computed once before the layers, then the layers."""
from __future__ import annotations

import sympy as sp

from dpc import graph
from dpc.algebra import is_zero
from dpc.backends.torch.code import Code, Lines
from dpc.backends.torch.printer import CALL, TorchPrinter
from dpc.ir import Step
from dpc.printing import format_constraint, math


def write_forward(code: Code, out: Lines):
    plan, p = code.plan, code.p
    inputs = [d.name for d in p.of_kind("input")]
    iterative = plan.kind != "closed"
    out(f"def forward(self, {', '.join(inputs + ['trace=False'] + (['steps=None'] if iterative else []))}):", 1)
    out_decl = p.decl(p.output)
    shape_doc = ", ".join(f"{d.name}: (batch, {', '.join(d.shape)})" for d in p.of_kind("input"))
    layers = "every layer's" if p.layers else "the"
    traced = f"the list of {layers} {p.output}" if iterative else f"[{p.output}]"
    summary = f'{shape_doc} -> {p.output}: (batch, {", ".join(out_decl.shape)}); trace=True returns {traced}.'
    if iterative:
        out(f'"""{summary}', 2)
        out("", 2)
        out("steps: run only the first `steps` layers (default: all of them, self.steps).", 2)
        out('"""', 2)
    else:
        out(f'"""{summary}"""', 2)
    _input_checks(code, out)
    if iterative:
        out(f"steps = self.steps if steps is None else {code.use('_layer_count')}(steps)", 2)
        if plan.per_layer:  # untied: only the layers built exist
            out("if steps > self.steps:", 2)
            out('raise ValueError(f"steps must be between 1 and {self.steps} (the layers built), got {steps}")', 3)
    printer = TorchPrinter(plan.names(None), plan.batched(), keepdim=True, like=inputs[0] if inputs else "_like")
    for name in plan.lets_before:
        decl = p.decl(name)
        out(f"{name} = {code.expr(printer, decl.value, decl)}", 2)
    for name in plan.starts:
        out(f"{name} = {_start(code, p.decl(name), printer, f'{inputs[0]}.shape[0]')}", 2)
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
        copies = [f"self.{n}.unbind(0)" if n in plan.stacked else f"{code.use('_copies')}(self.{n})"
                  for n in plan.copies]
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
    """`unroll until`: the update as a local function, applied until every sample's vector states change
    by at most tol of their norm (a converged sample keeps its value while the others go on) or `steps`
    times; with `backward implicit` the loop runs without a graph and _implicit_layer applies the
    update once more at the fixed point, with the implicit gradient."""
    plan, fp, loop = code.plan, code.plan.fixed_point, code.plan.loop
    names = [d.name for d in code.p.states]
    vectors = [d.name for d in code.p.states if d.shape]
    for name, expr in plan.hoisted:
        out(f"{name} = {code.expr(printer, expr)}  # the same in every iteration: computed once", 2)
    extra = {h: h for h, _ in plan.hoisted}
    tol = code.expr(printer, fp.tol)
    carried, new, done = fp.carried, fp.new, fp.done
    out(f"def {fp.iterate}({', '.join(names)}):", 2)
    out('"""One application of the update."""', 3)
    _layer(code, out, plan.step, loop, 3, extra)
    returned = names + ([_output(code, plan.step, loop, extra)] if carried else [])
    out(f"return {', '.join(returned)}", 3)
    out(f"{done} = {like}.new_zeros({like}.shape[0], dtype=torch.bool)  # the samples that have converged", 2)
    out(f"{plan.trace} = []", 2)
    indent = 2
    if fp.implicit:
        out("# no graph through the iterations: the gradient comes from the fixed point (_implicit_layer)", 2)
        out("with torch.no_grad():", 2)
        indent = 3
    out(f"for {loop} in range(steps):", indent)
    out(f"{', '.join(new.values())} = {fp.iterate}({', '.join(names)})", indent + 1)
    pairs = ", ".join(f"({new[n]}, {n})" for n in vectors)
    out(f"{fp.converged} = {code.use('_converged')}({tol}, {pairs})", indent + 1)
    for n in names:  # a converged sample keeps its value; a scalar state is one for the whole batch
        if n in vectors:
            out(f"{n} = torch.where({done}[:, None], {n}, {new[n]})", indent + 1)
        else:
            out(f"{n} = {new[n]}", indent + 1)
    if carried:
        out(f"{carried} = torch.where({done}[:, None], {carried}, {new[carried]}) if {loop} else "
            f"{new[carried]}", indent + 1)
    out(f"{done} = {done} | {fp.converged}", indent + 1)
    result = carried or _output(code, plan.step, loop, extra)
    out("if trace:", indent + 1)
    out(f"{plan.trace}.append({result})", indent + 2)
    out(f"if bool({done}.all()):", indent + 1)
    out("break", indent + 2)
    if fp.implicit:
        (state,) = names
        out("if torch.is_grad_enabled():", 2)
        out(f"{state} = {code.use('_implicit_layer')}({fp.iterate}, {state}, {tol}, steps)", 3)
        out("if trace:", 3)
        out(f"{plan.trace}[-1] = {result}", 4)
    out(f"return {plan.trace} if trace else {result}", 2)


def _layer_printer(code: Code, step: Step, layer: str, extra: dict[str, str]) -> TorchPrinter:
    names = code.plan.names(layer)
    names.update(extra)
    return TorchPrinter(names, code.plan.batched(step) | set(extra), keepdim=True,
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


def _start(code: Code, d, printer: TorchPrinter, batch: str) -> str:
    """A state's start: zeros, a number, or its start expression with the batch axis."""
    if not d.shape:
        return repr(float(d.value)) if d.value is not None and d.value.is_number else code.expr(printer, d.value)
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
    for d in p.of_kind("input"):
        dims = ", ".join(f"{{self.{dim}}}" if not dim.isdigit() else dim for dim in d.shape)
        cond = " or ".join([f"{d.name}.dim() != {len(d.shape) + 1}"] +
                           [f"{d.name}.shape[{i + 1}] != {('self.' + dim) if not dim.isdigit() else dim}"
                            for i, dim in enumerate(d.shape) if dim in p.dims or dim.isdigit()])
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
    printer = TorchPrinter(code.plan.names(None), set(args), keepdim=False, like=args[0])
    for name in code.plan.forward_lets:
        if name in used:
            decl = p.decl(name)
            out(f"{name} = {code.expr(printer, decl.value, decl)}", 2)
    out(f"return {code.expr(printer, p.objective)}", 2)
