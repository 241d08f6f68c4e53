"""Program -> one standalone PyTorch module (source text).

The module imports only torch, defines one nn.Module named after the network, and is
deterministic: the same program gives the same bytes. Layout of the class:

  __init__(*, params..., hypers=defaults..., steps=T)   bind dims from shapes, build weights
  forward(*inputs, trace=False)                          the unrolled network, batch first
  objective(*inputs, *vars)                              the source objective, per sample

Deciding is apart from writing: dpc.backends.torch.plan decides (what is per layer and how it is stored,
hoisted, batched, factored, folded, and every local name), and small writers write what it says: the
docstrings (docstrings), __init__ (constructor), forward and objective (forward), the class and the
module (here). The runtime helpers the code calls are emitted before the class, dependencies first.
"""
from __future__ import annotations

from dpc.backends.torch import runtime  # noqa: F401 - declares the backend's helpers
from dpc.backends.torch.code import Code, Lines, doc_escape
from dpc.backends.torch.constructor import write_init
from dpc.backends.torch.docstrings import class_docstring, module_docstring
from dpc.backends.torch.forward import write_forward, write_objective, write_properties
from dpc.backends.torch.plan import Plan, plan_module
from dpc.declare import ordered_helpers
from dpc.ir import Program


def emit_module(program: Program, source_name: str) -> str:
    """The generated module's source for a fully compiled program."""
    return write_module(plan_module(program), source_name)


def write_module(plan: Plan, source_name: str) -> str:
    code = Code(plan)
    body = Lines()
    _write_class(code, body, source_name)
    out = Lines()
    out(f'"""{doc_escape(module_docstring(plan, source_name))}"""')
    out("import torch")
    out("import torch.nn.functional as F")
    out("from torch import nn")
    out()
    for used in ordered_helpers(code.helpers):
        out()
        out(used.source)
        out()
    out()
    out.lines += body.lines
    return out.text().replace("\n\n\n\n", "\n\n\n")


def _write_class(code: Code, out: Lines, source_name: str):
    plan, p = code.plan, code.p
    out(f"class {p.name}(nn.Module):")
    out(f'"""{doc_escape(class_docstring(plan, source_name))}"""', 1)
    out()
    if plan.per_layer:
        out(f"# values with one copy per layer: layer k uses {plan.per_layer[0]}[k] (for layer-wise training)", 1)
        out(f"per_layer_parameters = {tuple(plan.storage(n) for n in plan.per_layer)!r}", 1)
        out()
    write_init(code, out)
    out()
    write_properties(code, out)
    write_forward(code, out)
    if p.objective is not None:
        out()
        write_objective(code, out)
    _write_curves(code, out)
    out()
    out("def extra_repr(self):", 1)
    call = set(code.plan.call_dims())  # read from the inputs at every call: not the module's
    parts = ", ".join(f"{d}={{self.{d}}}" for d in p.dims if not d.isdigit() and d not in call)
    steps = (", " if parts else "") + "steps={self.steps}" if p.layers else ""
    values = "".join(f", {n}={{{code.use('_summary')}(self.{n})}}" for n in plan.constrained)
    out(f'return f"{parts}{steps}{values}"', 2)
    if plan.listed:
        out()
        out("def __repr__(self):", 1)
        out(f'"""print(net): every per-layer nn.ParameterList on one line, not a line per layer."""', 2)
        out(f"return {code.use('_module_repr')}(self)", 2)


def _write_curves(code: Code, out: Lines):
    """learn influence / learn shrink: influence_curves(z=None) / shrink_curves(z=None), the learned functions
    sampled for plotting (atoms' _rbf_curves)."""
    from dpc import atoms
    forms = {}
    for w in code.p.of_kind("weight"):
        if isinstance(w.value, atoms.RbfFit):
            forms.setdefault(int(w.value.args[4]), []).append((w.name, float(w.value.args[1])))
    for kind, weights in sorted(forms.items()):
        method = ("influence_curves", "shrink_curves")[kind]
        what = "phi(z) of each learned influence function" if kind == 0 else "the learned shrinkage z - psi(z)"
        ranges = {r for _, r in weights}
        out()
        out(f"def {method}(self, z=None):", 1)
        out(f'"""For plotting: z (n,) (default: 1001 points of [-1.2 range, 1.2 range]) and {what}, values '
            f'(layers, rows, n), float64; {"several weights: a dict name -> (z, values)" if len(weights) > 1 else "one weight: the pair (z, values)"}."""', 2)
        if len(ranges) == 1:
            out(f"return {code.use('_rbf_curves')}(self, {tuple(n for n, _ in weights)!r}, {ranges.pop()!r}, z, "
                f"{kind == 1})", 2)
        else:
            parts = ", ".join(f"{n!r}: {code.use('_rbf_curves')}(self, ({n!r},), {r!r}, z, {kind == 1})" for n, r in weights)
            out(f"return {{{parts}}}", 2)
