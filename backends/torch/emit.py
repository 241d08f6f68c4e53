"""Program -> one standalone PyTorch module (source text).

The module imports only torch, defines one nn.Module named after the network, and is
deterministic: the same program gives the same bytes. Layout of the class:

  __init__(*, params..., hypers=defaults..., steps=T)   bind dims from shapes, build weights
  forward(*inputs, trace=False)                          the unrolled network, batch first
  objective(*inputs, *vars)                              the source objective, per sample
"""
from __future__ import annotations

import textwrap

import sympy as sp

from dpc import __version__, atoms, graph
from dpc.algebra import is_zero
from dpc.backends.torch.names import Namespace
from dpc.backends.torch import runtime  # noqa: F401 - declares the backend's helpers
from dpc.backends.torch.printer import CALL, TorchPrinter, Unsupported
from dpc.declare import ordered_helpers
from dpc.errors import DpcError
from dpc.ir import Program, Step, make_symbol
from dpc.printing import format_step, math
from dpc.requirements import RELATIONS, all_requirements



class _Lines:
    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, text: str = "", indent: int = 0):
        for line in text.split("\n"):
            self.lines.append(("    " * indent + line) if line else "")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _doc_escape(text: str) -> str:
    """Source text made safe inside a triple-quoted docstring: backslashes and quotes escaped, and control
    characters (a NUL makes a module unimportable, a CR would turn into a newline) written as \\xNN."""
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    return "".join(f"\\x{ord(c):02x}" if _is_control(c) else c for c in text)


def _is_control(c: str) -> bool:
    return c not in "\n\t" and (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F)


class Emitter:
    def __init__(self, program: Program, source_name: str):
        self.p = program
        self.source_name = source_name
        self.trainable_deps = graph.depends_on_trainable(program)
        self.params = program.of_kind("param")
        self.hypers = program.of_kind("hyper")
        self.inputs = program.of_kind("input")
        self.weights = program.of_kind("weight")
        self.states = program.states
        self.ns = Namespace(d.name for d in program.decls)
        self.loop = self.ns.fresh("k")
        self.tensor_names = self._tensor_valued()
        self.init_tensor_names = self._tensor_valued(in_init=True)
        self.used_helpers: set[str] = set()
        # per-layer values: untied weights, and params/hypers of `learn NAME untied` (one copy per layer)
        self.per_layer = [d for d in program.decls if d.per_layer]
        # a per-layer weight that one batched product reads whole (batch products) is one tensor with a leading
        # steps axis: its gradient comes out of that product already stacked. Every other per-layer value is an
        # nn.ParameterList, so each layer's gradient is its own tensor and backward stacks nothing.
        self.stacked = self._read_whole()
        self.listed = [d.name for d in self.per_layer if d.name not in self.stacked]
        self.layer_lets = graph.per_layer_lets(program)
        self.unread_first = self._unread_by_first_layer()
        # outside the layers (a var's start, the objective) a per-layer param or hyper is the value given at
        # construction, kept as self.NAME_given
        self.given = {d.name: self.ns.fresh(f"{d.name}_given") for d in self.per_layer
                      if d.kind in ("param", "hyper") and d.name in self.read_outside_layers()}
        # a constant matrix that forward solves with is factored once, in __init__ (Cholesky where the
        # derivation knows it is positive definite, else LU): a layer then costs two triangular solves
        self.factors = {name: (self.ns.fresh(f"{name}_factor"), self.ns.fresh(f"{name}_pivots"))
                        for name in self._solved_constants()}
        self.layer_let_values: dict = {}  # per-layer lets with their invariant products named (forward)
        self._refuse_per_sample_matrices()

    def _read_whole(self) -> set[str]:
        """The per-layer weights that an all_layers(W @ x) product of the batch-products pass reads."""
        from dpc.passes.batch_products import AllLayers
        found = set()
        for step in (self.p.step, self.p.first_step):
            for _, e in step.equations() if step is not None else ():
                for node in sp.preorder_traversal(e):
                    if isinstance(node, AllLayers):
                        matrix = node.args[0].as_coeff_matrices()[1][0]
                        found.add((matrix.arg if isinstance(matrix, sp.Transpose) else matrix).name)
        return found

    def _unread_by_first_layer(self) -> set[str]:
        """The listed per-layer values that the first layer does not read (fold start: it starts from z = 0,
        so S @ z folded away)."""
        first = self.p.first_step
        if first is None or self.p.until is not None or not self.listed:
            return set()
        read = set()
        for _, e in first.equations():
            read |= graph.names_in(e)
        for name in self.lets_for_layer(first):  # the output expression's names included
            read |= graph.names_in(self.p.decl(name).value)
        for d in self.p.of_kind("output"):
            read |= graph.names_in(d.value)
        return {name for name in self.listed if name not in read}

    def per_layer_init(self, name: str, value: str) -> str:
        """The constructor's code for a per-layer value starting at `value` (see self.stacked)."""
        if name in self.stacked:
            self.used_helpers.add("_layers")
            return f"nn.Parameter(_layers({value}, steps))"
        self.used_helpers.add("_layer_list")
        return f"_layer_list({value}, steps{', first_read=False' if name in self.unread_first else ''})"

    def _refuse_per_sample_matrices(self):
        """The generated code holds a batch of vectors as (batch, n) and a matrix once for the whole batch:
        a matrix that differs per sample (abs(bentropy(sigmoid(z)) * C), s * C + D with s per sample) has
        no layout there. A DpcError at the update or the objective, not a shape error at run time."""
        per_sample = {d.name for d in self.p.decls if d.kind in ("input", "var", "temp", "output")}
        places = [("update", e) for step in (self.p.first_step, self.p.step) if step is not None
                  for _, e in step.equations()]
        places += [("update", e) for _, e in self.p.closed_form]
        places += [("output", d.value) for d in self.p.of_kind("output") if d.value is not None]
        if self.p.objective is not None:
            places.append(("minimize", self.p.objective))
        for where, expr in places:
            for node in sp.preorder_traversal(expr):
                shape = getattr(node, "shape", None)
                if isinstance(node, sp.MatrixExpr) and shape and shape[0] != 1 and shape[1] != 1 \
                        and graph.names_in(node) & per_sample:
                    span = self.p.span_of_directive(where) if where != "minimize" else \
                        (self.p.term_spans[0][1] if self.p.term_spans else None)
                    raise DpcError(f"{math(node)} is a matrix that differs from sample to sample; the generated "
                                   "code keeps one matrix for the whole batch", span,
                                   "apply the per-sample factor to a vector instead, e.g. s * (C @ v)"
                                   ).with_source(self.p.source)

    def _solved_constants(self) -> list[str]:
        """Lets computed once at construction that forward uses as the matrix of a solve(A, b)."""
        exprs = [e for _, e in self.p.closed_form]
        for step in (self.p.first_step, self.p.step):
            if step is not None:
                exprs += [e for _, e in step.equations()]
        exprs += [d.value for d in self.p.of_kind("output") if d.value is not None]
        solved = {s.args[0].name for e in exprs for s in e.atoms(atoms.Solve) if isinstance(s.args[0], sp.MatrixSymbol)}
        return [d.name for d in self.p.of_kind("let") if d.name in solved and len(d.shape) == 2
                and d.name not in self.trainable_deps and d.name not in self.layer_lets]

    # --- what is a tensor, what is computed where ---
    def _tensor_valued(self, in_init: bool = False) -> set[str]:
        """Names whose value is a tensor (else a Python float): params, weights, and what uses them.
        In __init__ a learned hyper is still the float it was given (its nn.Parameter is self.NAME)."""
        out = {d.name for d in self.p.decls if d.kind in ("param", "weight", "input", "var", "temp")
               or (d.trainable and not (in_init and d.kind == "hyper"))}
        for name in graph.ordered(self.p, ("let",)):
            if graph.names_in(self.p.decl(name).value) & out or self.p.decl(name).shape:
                out.add(name)
        return out

    def forward_lets(self) -> list[str]:
        return [n for n in graph.ordered(self.p, ("let",)) if n in self.trainable_deps]

    def fixed_lets(self) -> list[str]:
        return [n for n in graph.ordered(self.p, ("let",)) if n not in self.trainable_deps]

    def init_lets(self) -> list[str]:
        """Lets computed in __init__: the fixed ones, and any that a learned weight's initial value reads
        (with `learn D`, L = opnorm(D)^2 is recomputed in forward but W starts at D.T / L)."""
        wanted = set(self.fixed_lets())
        frontier = set().union(*(graph.names_in(w.value) for w in self.weights)) if self.weights else set()
        lets = {d.name for d in self.p.of_kind("let")}
        while frontier:
            name = frontier.pop()
            if name in lets and name not in wanted:
                wanted.add(name)
                frontier |= graph.names_in(self.p.decl(name).value)
        return [n for n in graph.ordered(self.p, ("let",)) if n in wanted]

    def read_outside_layers(self, objective: bool = True) -> set[str]:
        """Names read by the vars' starts (and the objective), directly or through lets."""
        frontier = graph.names_in(self.p.objective) if objective else set()
        for d in self.states:
            frontier |= graph.names_in(d.value)
        seen: set[str] = set()
        while frontier:
            name = frontier.pop()
            if name not in seen:
                seen.add(name)
                if self.p.has(name) and self.p.decl(name).kind == "let":
                    frontier |= graph.names_in(self.p.decl(name).value)
        return seen

    def lets_for_layer(self, step: Step) -> list[str]:
        """The per-layer lets this layer reads (its step and the output expression), dependencies first."""
        frontier = set()
        for _, e in step.equations():
            frontier |= graph.names_in(e)
        for d in self.p.of_kind("output"):
            frontier |= graph.names_in(d.value)
        wanted: set[str] = set()
        while frontier:
            name = frontier.pop()
            if name in self.layer_lets and name not in wanted:
                wanted.add(name)
                frontier |= graph.names_in(self.p.decl(name).value)
        return [n for n in self.layer_lets if n in wanted]

    def like(self) -> str:
        return self.params[0].name if self.params else "_like"

    # --- name bindings ---
    def init_names(self) -> dict[str, str]:
        """Inside __init__ everything is a local."""
        names = {d.name: d.name for d in self.p.decls}
        names.update({dim: dim for dim in self.p.dims})
        return names

    def self_names(self, layer: str | None) -> dict[str, str]:
        """Inside forward/objective: attributes on self, per-layer weights indexed."""
        names = {dim: f"self.{dim}" for dim in self.p.dims}
        for d in self.p.decls:
            if d.kind in ("param", "hyper", "weight") or (d.kind == "let" and d.name not in self.trainable_deps):
                names[d.name] = f"self.{d.name}"
                if d.per_layer and layer is not None:  # layer k's copy, from the tuple of copies taken in forward
                    names[d.name] = f"{d.name}[{layer}]"
                elif d.name in self.given and layer is None:  # outside the layers: the value given
                    names[d.name] = f"self.{self.given[d.name]}"
            else:
                names[d.name] = d.name
        for name, (factor, pivots) in self.factors.items():  # solve(A, b) reads A's factors (printer)
            names[f"{name}.factor"] = (f"self.{factor}",) if self.p.decl(name).spd else \
                (f"self.{factor}", f"self.{pivots}")
        if layer is not None:  # the layer number t = 1..T (support selection's schedule)
            names[atoms.LAYER.name] = "1" if layer == "0" else f"({layer} + 1)"
        return names

    def batched(self, step: Step | None = None) -> set[str]:
        out = {d.name for d in self.inputs} | {d.name for d in self.states if d.shape}
        if step is not None:
            changed = True
            while changed:
                changed = False
                for name, expr in step.equations():
                    if name not in out and graph.names_in(expr) & out:
                        out.add(name)
                        changed = True
        return out

    # --- the module ---
    def module(self) -> str:
        out = _Lines()
        body = _Lines()
        self.emit_class(body)
        out(f'"""{_doc_escape(self.docstring())}"""')
        out("import torch")
        out("import torch.nn.functional as F")
        out("from torch import nn")
        out()
        for used in ordered_helpers(self.used_helpers):
            out()
            out(used.source)
            out()
        out()
        out.lines += body.lines
        text = out.text()
        return text.replace("\n\n\n\n", "\n\n\n")

    def docstring(self) -> str:
        lines = [f"{self.p.name}: generated by dpc {__version__} from {self.source_name}. Do not edit; recompile.",
                 "", "Source program:", ""]
        lines += ["    " + line if line.strip() else "" for line in self.p.source.rstrip().splitlines()]
        lines += ["", "Derivation:"]
        last = None
        for note in self.p.notes:
            if note.pass_name != last:
                lines += ["", f"  {note.pass_name}"]
                last = note.pass_name
            lines.append(f"    {note.text}")
        lines += ["", "Network:"]
        if self.p.first_step is not None:
            lines.append("  first layer:")
            lines += format_step(self.p.first_step, "    ")
            lines.append("  every later layer:")
        lines += format_step(self.p.step, "    ") if self.p.step else []
        for name, expr in self.p.closed_form:
            lines.append(f"    {name} = {math(expr)}")
        if self.p.layers:
            untied = [d.name for d in self.per_layer]
            sharing = "tied" if self.p.tied else "untied" if self.p.tied is False else \
                (f"{', '.join(untied)} one copy per layer" if untied else "no learned weights")
            lines.append(f"  {self.p.layers} layers by default (steps=...), {sharing}")
        return "\n".join(lines) + "\n"

    def emit_class(self, out: _Lines):
        out(f"class {self.p.name}(nn.Module):")
        out(f'"""{_doc_escape(self.class_doc())}"""', 1)
        out()
        per_layer = tuple(d.name for d in self.per_layer)
        if per_layer:
            example = per_layer[0]
            out(f"# values with one copy per layer: layer k uses {example}[k] (for layer-wise training)", 1)
            out(f"per_layer_parameters = {per_layer!r}", 1)
            out()
        self.emit_init(out)
        if self.listed:
            self.emit_load_stacked(out)
        out()
        self.emit_forward(out)
        if self.p.objective is not None:
            out()
            self.emit_objective(out)
        out()
        out("def extra_repr(self):", 1)
        parts = ", ".join(f"{d}={{self.{d}}}" for d in self.p.dims if not d.isdigit())
        steps = ", steps={self.steps}" if self.p.layers else ""
        out(f'return f"{parts}{steps}"', 2)

    def class_doc(self) -> str:
        lines = [f"{self.p.name}, compiled by dpc from {self.source_name}.", "", "Args:"]
        for d in self.params:
            lines.append(f"    {d.name}: tensor of shape ({', '.join(d.shape)})"
                         f"{', learned' if d.trainable else ''}{self.per_layer_doc(d)}")
        for d in self.hypers:
            lines.append(f"    {d.name}: float, default {math(d.value)}{', learned' if d.trainable else ''}"
                         f"{self.per_layer_doc(d)}")
        for dim in self.unbound_dims():
            lines.append(f"    {dim}: int, the size {dim}")
        if self.p.layers:
            lines.append(f"    steps: number of layers, default {self.p.layers}")
        if self.weights:
            lines += ["", "Learned weights (initialised so the untrained network is the algorithm):"]
            for w in self.weights:
                lines.append(f"    {w.name}: {self.layer_shape(w)} = {math(w.value)}")
        if self.per_layer:
            lines += [""] + textwrap.wrap(self.per_layer_storage_doc(), 104)
        return "\n".join(lines) + "\n"

    def per_layer_storage_doc(self) -> str:
        """The class docstring's paragraph on per-layer values: how each is stored, and its state_dict keys."""
        listing = _listing  # a, b and c
        text = "Per layer: layer k uses " + listing([f"{d.name}[k]" for d in self.per_layer]) + "."
        if self.stacked:
            names = sorted(self.stacked)
            text += (f" {listing(names)} {'is one tensor' if len(names) == 1 else 'are tensors'} with a leading "
                     f"steps axis (one product computes every layer's product with {listing(names)}, and gives "
                     "the gradient already stacked).")
        if self.listed:
            first = self.listed[0]
            lists = "is an nn.ParameterList" if len(self.listed) == 1 else "are nn.ParameterLists"
            text += (f" {listing(self.listed)} {lists}, one parameter per layer (state_dict keys {first}.0, "
                     f"{first}.1, ...), so backward stacks no gradient; load_state_dict also takes them stacked, "
                     "as an earlier dpc saved them.")
        if self.unread_first:
            names = sorted(self.unread_first)
            text += (f" The first layer (its start is constant) does not read {listing(names)}, so "
                     f"{listing([n + '[0]' for n in names])} {'is' if len(names) == 1 else 'are'} frozen "
                     "(requires_grad False): no optimizer or DDP waits for its gradient.")
        return text

    def per_layer_doc(self, d) -> str:
        """`learn NAME untied`: one copy per layer."""
        return f" per layer: self.{d.name} is {self.layer_shape(d)}" if d.per_layer else ""

    def layer_shape(self, d) -> str:
        """A value's shape as the class docstring states it: per layer, a stack or a list of `steps` copies."""
        shape = f"({', '.join(d.shape)})"
        if not d.per_layer:
            return shape
        if d.name in self.stacked:
            return f"({', '.join(('steps',) + d.shape)})"
        return f"steps x {shape}" if d.shape else "steps scalars"

    def emit_load_stacked(self, out: _Lines):
        """load_state_dict also takes a state_dict saved when the ParameterLists were stacked tensors."""
        self.used_helpers.add("_unstack_layers")
        out()
        out("def _load_from_state_dict(self, state_dict, prefix, metadata, strict, missing, unexpected, errors):", 1)
        were = "were" if len(self.listed) > 1 else "was"
        out(f'"""Also loads a state_dict from an earlier dpc, where {_listing(self.listed)} {were} stacked on a '
            'steps axis."""', 2)
        out(f"_unstack_layers(state_dict, prefix, {tuple(self.listed)!r}, self.steps, errors)", 2)
        out("super()._load_from_state_dict(state_dict, prefix, metadata, strict, missing, unexpected, errors)", 2)

    # --- __init__ ---
    def unbound_dims(self) -> list[str]:
        bound = {dim for d in self.params for dim in d.shape}
        used = {dim for d in self.p.decls if d.kind in ("input", "var", "weight", "temp") for dim in d.shape}
        return [dim for dim in self.p.dims if dim not in bound and dim in used and not dim.isdigit()]

    def emit_init(self, out: _Lines):
        args = [d.name for d in self.params]
        args += [f"{d.name}={_number(d.value)}" for d in self.hypers]
        args += self.unbound_dims()
        if self.p.layers:
            args.append(f"steps={self.p.layers}")
        out(f"def __init__(self, *, {', '.join(args)}):", 1)
        out("super().__init__()", 2)
        bound: dict[str, str] = {}
        for d in self.params:
            self.emit_param_check(out, d, bound)
        for dim in self.unbound_dims():
            out(f"{dim} = int({dim})", 2)
            bound[dim] = dim
        for dim in self.p.dims:
            if dim in bound:
                out(f"self.{dim} = {dim}", 2)
        if self.p.layers:
            self.used_helpers.add("_layer_count")
            out("self.steps = steps = _layer_count(steps)", 2)
        if not self.params:
            out("_like = torch.empty(0)  # no tensor given: new tensors take the default dtype, on the cpu", 2)
        printer = TorchPrinter(self.init_names(), set(), keepdim=False, like=self.like())
        for d in self.hypers:
            if d.per_layer:  # learn NAME untied: one copy per layer, each the value given
                value = f"torch.as_tensor(float({d.name}), dtype={self.like()}.dtype, device={self.like()}.device)"
                out(f"self.{d.name} = {self.per_layer_init(d.name, value)}", 2)
                if d.name in self.given:
                    out(f"self.{self.given[d.name]} = float({d.name})  # read outside the layers", 2)
            elif d.trainable:
                out(f"self.{d.name} = nn.Parameter(torch.as_tensor(float({d.name}), dtype={self.like()}.dtype, "
                    f"device={self.like()}.device))", 2)
            else:
                out(f"self.{d.name} = {d.name} = float({d.name})", 2)
        for d in self.params:
            if d.per_layer:
                out(f"self.{d.name} = {self.per_layer_init(d.name, d.name)}", 2)
                if d.name in self.given:
                    out(f'self.register_buffer("{self.given[d.name]}", {d.name})  # read outside the layers', 2)
            elif d.trainable:
                out(f"self.{d.name} = nn.Parameter({d.name})", 2)
            else:
                out(f'self.register_buffer("{d.name}", {d.name})', 2)
        needed = self.names_used_after_init()
        fixed = set(self.fixed_lets())
        checks = all_requirements(self.p)
        known = {d.name for d in self.params + self.hypers}
        checks = self.emit_checks(out, printer, checks, known)
        for name in self.init_lets():
            decl = self.p.decl(name)
            if name not in self.init_tensor_names and _may_overflow(decl.value):
                # a Python float's ** raises OverflowError where * and / give inf: say which let
                text = f"{name} = {math(decl.value)} is past float64's range with these values"
                out("try:", 2)
                out(f"{name} = {self.expr(printer, decl.value, decl)}", 3)
                out("except OverflowError:", 2)
                out(f"raise ValueError({text!r}) from None", 3)
            else:
                out(f"{name} = {self.expr(printer, decl.value, decl)}", 2)
            known.add(name)
            checks = self.emit_checks(out, printer, checks, known)
            if name not in needed or name not in fixed:  # a let of a learned value is recomputed in forward
                continue
            if name in self.init_tensor_names:
                out(f'self.register_buffer("{name}", torch.as_tensor({name}))', 2)
            else:
                out(f"self.{name} = {name}", 2)
            if name in self.factors:
                factor, pivots = self.factors[name]
                if decl.spd:
                    self.used_helpers.add("_cholesky")
                    out(f'self.register_buffer("{factor}", _cholesky({name}, "{name}"))  # factored once', 2)
                else:
                    out(f"{factor}, {pivots} = torch.linalg.lu_factor({name})  # factored once", 2)
                    out(f'self.register_buffer("{factor}", {factor})', 2)
                    out(f'self.register_buffer("{pivots}", {pivots})', 2)
        if self.weights:
            out("# learned weights, initialised to their values in the algorithm", 2)
        for w in self.weights:
            value = self.expr(printer, w.value, w)
            tensor = value
            if not graph.names_in(w.value) & self.init_tensor_names and not isinstance(w.value, atoms.InitialValue):
                # a number: give it the params' dtype
                tensor = f"torch.as_tensor({value}, dtype={self.like()}.dtype, device={self.like()}.device)"
            if w.per_layer:
                out(f"self.{w.name} = {self.per_layer_init(w.name, tensor)}", 2)
            else:
                tensor = tensor if tensor.isidentifier() else f"({tensor})"  # 2 * C / tau: clone the whole value
                out(f"self.{w.name} = nn.Parameter({tensor}.clone())", 2)

    def emit_checks(self, out: _Lines, printer: TorchPrinter, checks: list, known: set[str]) -> list:
        """The requirements on hypers and lets (dpc.requirements) whose values are known by now, each a
        ValueError naming the value; returns those still waiting for a let."""
        waiting = []
        for req in checks:
            names = graph.names_in(req.expr)
            if not names <= known:
                waiting.append(req)
                continue
            value = f"float({self.expr(printer, req.expr)})"
            condition = {"positive": f'not 0 < {value} < float("inf")',
                         "nonnegative": f'not 0 <= {value} < float("inf")',
                         "nonzero": f"{value} == 0"}[req.relation]
            text = _fstring_text(f"{math(req.expr)} must be {RELATIONS[req.relation]} ({req.why}), got ")
            out(f"if {condition}:", 2)
            out(f'raise ValueError(f"{text}{{{value}}}")', 3)
        return waiting

    def names_used_after_init(self) -> set[str]:
        """What forward and objective read (directly or through lets computed in forward)."""
        used = graph.names_in(self.p.objective)
        for step in (self.p.step, self.p.first_step):
            if step is not None:
                for _, e in step.equations():
                    used |= graph.names_in(e)
        for d in self.p.decls:
            if d.kind == "var":
                used |= graph.names_in(d.value)
        for name in self.forward_lets():
            used |= graph.names_in(self.p.decl(name).value)
        for _, e in self.p.closed_form:
            used |= graph.names_in(e)
        for d in self.p.of_kind("output"):
            used |= graph.names_in(d.value)
        return used

    def emit_param_check(self, out: _Lines, d, bound: dict[str, str]):
        name, shape = d.name, d.shape
        # a copy: training a learned param must not write into the caller's tensor
        out(f"{name} = torch.as_tensor({name}).detach().clone()", 2)
        out(f"if not {name}.is_floating_point():", 2)
        out(f"{name} = {name}.to(torch.get_default_dtype())", 3)
        kind = {0: "a scalar", 1: "a vector", 2: "a matrix"}[len(shape)]
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
                out(f"{dim} = {here}", 2)
                bound[dim] = f"{name}.shape[{axis}]"

    def expr(self, printer: TorchPrinter, expr, decl=None) -> str:
        try:
            code = printer(expr)
            self.used_helpers |= printer.helpers
            return code
        except Unsupported as e:
            span = decl.span if decl is not None else None
            raise DpcError(str(e.diagnostics[0].message), span).with_source(self.p.source) from None

    # --- forward ---
    def emit_forward(self, out: _Lines):
        inputs = [d.name for d in self.inputs]
        iterative = not self.p.closed_form
        out(f"def forward(self, {', '.join(inputs + ['trace=False'] + (['steps=None'] if iterative else []))}):", 1)
        out_name = self.p.output
        shape_doc = ", ".join(f"{d.name}: (batch, {', '.join(d.shape)})" for d in self.inputs)
        out_decl = self.p.decl(out_name)
        layers = "every layer's" if self.p.layers else "the"
        traced = f"the list of {layers} {out_name}" if iterative else f"[{out_name}]"
        summary = f'{shape_doc} -> {out_name}: (batch, {", ".join(out_decl.shape)}); trace=True returns {traced}.'
        if iterative:
            out(f'"""{summary}', 2)
            out("", 2)
            out("steps: run only the first `steps` layers (default: all of them, self.steps).", 2)
            out('"""', 2)
        else:
            out(f'"""{summary}"""', 2)
        self.emit_input_checks(out)
        if iterative:
            self.emit_steps_check(out)
        names = self.self_names(None)
        base_printer = TorchPrinter(names, self.batched(), keepdim=True, like=inputs[0] if inputs else "_like")
        # a let of a per-layer value is computed in every layer; before them only where a start reads it
        # (from the values given, as the start reads them)
        outside = self.read_outside_layers(objective=False)
        for name in self.forward_lets():
            if name in self.layer_lets and name not in outside:
                continue
            decl = self.p.decl(name)
            out(f"{name} = {self.expr(base_printer, decl.value, decl)}", 2)
        output_expr = out_decl.value if out_decl.kind == "output" else None
        if self.p.closed_form:
            if self.per_layer:
                raise DpcError("a closed form is one layer: nothing in it can be learned per layer (untied)",
                               self.p.span_of_directive("learn")).with_source(self.p.source)
            for name, expr in self.p.closed_form:
                out(f"{name} = {self.batch_shaped(base_printer, name, expr)}", 2)
            if output_expr is not None:
                out(f"{out_name} = {self.batch_shaped(base_printer, out_name, output_expr)}", 2)
            out(f"return [{out_name}] if trace else {out_name}", 2)
            return
        if self.p.until is not None:
            self.emit_fixed_point(out, base_printer, inputs[0], out_name, output_expr)
            return
        step, first = self.p.step, self.p.first_step or self.p.step
        first, step, hoisted = self.hoist(first, step)
        reads = set()
        for _, e in first.equations():
            reads |= graph.names_in(e)
        assigned = {n for n, _ in first.assigns}
        for _, e in step.equations():  # a state no layer assigns, read by the later layers: still its start
            reads |= graph.names_in(e) - assigned
        batch = f"{inputs[0]}.shape[0]"
        if output_expr is not None:
            reads |= graph.names_in(output_expr)
        for d in self.states:  # the output too, if no layer assigns it (it stays at its start)
            if d.name in reads or d.name == out_name:
                out(f"{d.name} = {self.start_code(d, base_printer, batch)}", 2)
        for name, expr in hoisted:
            out(f"{name} = {self.expr(base_printer, expr)}  # the same in every layer: computed once", 2)
        first, step, all_layers = self.batch_all_layers(first, step)
        for name, (matrix, vector) in all_layers.items():
            self.emit_all_layers(out, base_printer, name, matrix, vector)
        read = graph.names_in(output_expr) if output_expr is not None else set()
        for _, e in first.equations() + step.equations():
            read |= graph.names_in(e)
        for name in self.layer_lets:  # a let of a per-layer value (ADMM's A of rho[k]) reads the layer's copy
            read |= graph.names_in(self.p.decl(name).value)
        per_layer = [d.name for d in self.per_layer if d.name in read]  # not those read only as one product
        for name, expr in self.hoist_layer_lets():
            out(f"{name} = {self.expr(base_printer, expr)}  # the same in every layer: computed once", 2)
            hoisted.append((name, expr))  # read by the layers like the hoisted vectors
        if per_layer:
            if any(n in self.stacked for n in per_layer):
                out("# a stack's slices, taken once: self.W[k] in the loop would make backward build a", 2)
                out("# zero gradient of the whole stack for every layer", 2)
            if any(n not in self.stacked for n in per_layer):
                self.used_helpers.add("_copies")
                out("# a ParameterList's copies, taken once (indexing it costs a few microseconds a time)", 2)
            copies = [f"self.{n}.unbind(0)" if n in self.stacked else f"_copies(self.{n})" for n in per_layer]
            out(f"{', '.join(per_layer)} = {', '.join(copies)}", 2)
        trace_list = self.ns.fresh(f"{out_name}s")
        out(f"{trace_list} = []", 2)
        extra = {h: h for h, _ in hoisted}
        first_extra = {**extra, **{name: f"{name}[0]" for name in all_layers}}
        extra.update({name: f"{name}[{self.loop}]" for name in all_layers})
        self.emit_step(out, first, "0", 2, names_extra=first_extra)
        out("if trace:", 2)
        out(f"{trace_list}.append({self.output_code(first, '0', first_extra)})", 3)
        out(f"for {self.loop} in range(1, steps):", 2)
        self.emit_step(out, step, self.loop, 3, names_extra=extra)
        out("if trace:", 3)
        out(f"{trace_list}.append({self.output_code(step, self.loop, extra)})", 4)
        last = {**extra, **{name: f"{name}[steps - 1]" for name in all_layers}}
        out(f"return {trace_list} if trace else {self.output_code(step, 'steps - 1', last)}", 2)

    def emit_fixed_point(self, out: _Lines, printer: TorchPrinter, like: str, out_name: str, output_expr):
        """`unroll until`: the update as a local function, applied until every sample's vector states change
        by at most tol of their norm (a converged sample keeps its value while the others go on) or `steps`
        times; with `backward implicit` the loop runs without a graph and _implicit_layer applies the
        update once more at the fixed point, with the implicit gradient."""
        implicit = self.p.backward == "implicit"
        step = self.p.step
        _, step, hoisted = self.hoist(step, step)
        names = [d.name for d in self.states]
        vectors = [d.name for d in self.states if d.shape]
        batch = f"{like}.shape[0]"
        for d in self.states:
            out(f"{d.name} = {self.start_code(d, printer, batch)}", 2)
        for name, expr in hoisted:
            out(f"{name} = {self.expr(printer, expr)}  # the same in every iteration: computed once", 2)
        extra = {h: h for h, _ in hoisted}
        tol = self.expr(printer, self.p.until)
        iterate = self.ns.fresh("iterate")
        # an output that reads the update's temporaries is computed inside the update, and kept per sample
        # like a state (a converged sample keeps it too)
        temps = {n for n, _ in step.lets}
        output_reads = graph.names_in(output_expr) if output_expr is not None else {out_name}
        carried = self.ns.fresh(out_name) if output_reads & temps else None
        out(f"def {iterate}({', '.join(names)}):", 2)
        out('"""One application of the update."""', 3)
        self.emit_step(out, step, self.loop, 3, names_extra=extra)
        returned = names + ([self.output_code(step, self.loop, extra)] if carried else [])
        out(f"return {', '.join(returned)}", 3)
        new = {n: self.ns.fresh(f"{n}_new") for n in names + ([carried] if carried else [])}
        done, trace_list = self.ns.fresh("done"), self.ns.fresh(f"{out_name}s")
        out(f"{done} = {like}.new_zeros({batch}, dtype=torch.bool)  # the samples that have converged", 2)
        out(f"{trace_list} = []", 2)
        indent = 2
        if implicit:
            out("# no graph through the iterations: the gradient comes from the fixed point (_implicit_layer)", 2)
            out("with torch.no_grad():", 2)
            indent = 3
        self.used_helpers.add("_converged")
        out(f"for {self.loop} in range(steps):", indent)
        out(f"{', '.join(new.values())} = {iterate}({', '.join(names)})", indent + 1)
        pairs = ", ".join(f"({new[n]}, {n})" for n in vectors)
        converged = self.ns.fresh("converged")
        out(f"{converged} = _converged({tol}, {pairs})", indent + 1)
        for n in names:  # a converged sample keeps its value; a scalar state is one for the whole batch
            if n in vectors:
                out(f"{n} = torch.where({done}[:, None], {n}, {new[n]})", indent + 1)
            else:
                out(f"{n} = {new[n]}", indent + 1)
        if carried:
            out(f"{carried} = torch.where({done}[:, None], {carried}, {new[carried]}) if {self.loop} else "
                f"{new[carried]}", indent + 1)
        out(f"{done} = {done} | {converged}", indent + 1)
        result = carried or self.output_code(step, self.loop, extra)
        out("if trace:", indent + 1)
        out(f"{trace_list}.append({result})", indent + 2)
        out(f"if bool({done}.all()):", indent + 1)
        out("break", indent + 2)
        if implicit:
            if carried:
                raise DpcError("backward implicit returns the fixed point: output the var or an expression of it, "
                               "not a temporary of the update", self.p.span_of_directive("output")
                               or self.p.span_of_directive("backward")).with_source(self.p.source)
            self.used_helpers.add("_implicit_layer")
            (state,) = names
            out("if torch.is_grad_enabled():", 2)
            out(f"{state} = _implicit_layer({iterate}, {state}, {tol}, steps)", 3)
            out("if trace:", 3)
            out(f"{trace_list}[-1] = {result}", 4)
        out(f"return {trace_list} if trace else {result}", 2)

    def output_code(self, step: Step, layer: str, names_extra: dict[str, str]) -> str:
        """What the network returns after a layer: the output var, or the output expression read from the
        layer's states (and its copies of per-layer values), one row per sample."""
        decl = self.p.decl(self.p.output)
        if decl.kind != "output":
            return decl.name
        names = self.self_names(layer)
        names.update(names_extra)
        printer = TorchPrinter(names, self.batched(step) | set(names_extra), keepdim=True,
                               like=self.inputs[0].name)
        return self.batch_shaped(printer, decl.name, decl.value)

    def emit_steps_check(self, out: _Lines):
        self.used_helpers.add("_layer_count")
        out("steps = self.steps if steps is None else _layer_count(steps)", 2)
        if self.per_layer:  # untied: only the layers built exist
            out("if steps > self.steps:", 2)
            out('raise ValueError(f"steps must be between 1 and {self.steps} (the layers built), got {steps}")', 3)

    def emit_input_checks(self, out: _Lines):
        first = None
        for d in self.inputs:
            dims = ", ".join(f"{{self.{dim}}}" if not dim.isdigit() else dim for dim in d.shape)
            cond = " or ".join([f"{d.name}.dim() != {len(d.shape) + 1}"] +
                               [f"{d.name}.shape[{i + 1}] != {('self.' + dim) if not dim.isdigit() else dim}"
                                for i, dim in enumerate(d.shape) if dim in self.p.dims or dim.isdigit()])
            out(f"if {cond}:", 2)
            out(f'raise ValueError(f"{d.name} must have shape (batch, {dims}), got {{tuple({d.name}.shape)}}")', 3)
            self.emit_dtype_check(out, d.name)
            if first is None:
                first = d.name
            else:
                out(f"if {d.name}.shape[0] != {first}.shape[0]:", 2)
                out(f'raise ValueError("{first} and {d.name} must have the same batch size")', 3)

    def emit_dtype_check(self, out: _Lines, name: str):
        """Inputs in the module's dtype (that of its first tensor): a float32 batch into a float64 module
        would fail deep inside a matmul, an integer one would be silently rounded."""
        tensors = [d.name for d in self.params] + [d.name for d in self.weights]
        if not tensors:
            out(f"if not {name}.is_floating_point():", 2)
            out(f'raise ValueError(f"{name} must be a floating-point tensor, got dtype {{{name}.dtype}}")', 3)
            return
        ref = f"self.{tensors[0]}" + ("[0]" if tensors[0] in self.listed else "")  # a ParameterList: layer 0's
        out(f"if {name}.dtype != {ref}.dtype:", 2)
        out(f'raise ValueError(f"{name} must have dtype {{{ref}.dtype}} (the dtype of {tensors[0]}), '
            f'got {{{name}.dtype}}")', 3)

    def start_code(self, d, printer, batch) -> str:
        if not d.shape:
            return repr(float(d.value)) if d.value is not None and d.value.is_number else self.expr(printer, d.value)
        size = ", ".join(f"self.{dim}" if not dim.isdigit() else dim for dim in d.shape)
        like = self.inputs[0].name
        if d.value is None or is_zero(d.value):
            return f"{like}.new_zeros({batch}, {size})"
        code = self.expr(printer, d.value, d)
        if graph.names_in(d.value) & {i.name for i in self.inputs}:
            return code
        return f"({code}).expand({batch}, {size})"

    def emit_step(self, out: _Lines, step: Step, layer: str, indent: int, names_extra: dict[str, str]):
        names = self.self_names(layer)
        names.update(names_extra)
        printer = TorchPrinter(names, self.batched(step) | set(names_extra), keepdim=True,
                               like=self.inputs[0].name)
        for name in self.lets_for_layer(step):  # computed from this layer's copies of per-layer values
            decl = self.p.decl(name)
            value = self.layer_let_values.get(name, decl.value)  # its layer-invariant products hoisted
            out(f"{name} = {self.expr(printer, value, decl)}", indent)
        for name, expr in step.lets:  # the output may be a temporary: it too keeps the batch shape
            code = self.batch_shaped(printer, name, expr) if name == self.p.output else self.expr(printer, expr)
            out(f"{name} = {code}", indent)
        order = graph.step_order(step)
        assigns = {name: self.batch_shaped(printer, name, expr) for name, expr in step.assigns}
        if order is None:
            targets = [n for n, _ in step.assigns]
            out(f"{', '.join(targets)} = {', '.join(assigns[n] for n in targets)}", indent)
        else:
            for name in order:
                out(f"{name} = {assigns[name]}", indent)

    def batch_shaped(self, printer: TorchPrinter, name: str, expr) -> str:
        """A state's new value, (batch, n) even where it folded to something that reads no input
        (z <- soft(0, t) in the first layer, or an update constant in the sample)."""
        code = self.expr(printer, expr)
        shape = self.p.decl(name).shape
        if not shape or printer.is_batched(expr):
            return code
        size = ", ".join(f"self.{dim}" if not dim.isdigit() else dim for dim in shape)
        wrapped = printer.wrap(expr, CALL)  # the same code, parenthesised unless it is a call or a name
        return f"{wrapped}.expand({self.inputs[0].name}.shape[0], {size})"

    def hoist(self, first: Step, step: Step):
        """Vector subexpressions that read inputs and nothing that changes between layers
        (tied weights applied to x) are computed once, before the first layer."""
        varying = {d.name for d in self.states} | {n for n, _ in step.lets} | \
                  {d.name for d in self.per_layer} | set(self.layer_lets)
        inputs = {d.name for d in self.inputs}
        found: dict = {}

        def invariant(e):  # softss's share grows with the layer number: never the same in every layer
            return not graph.names_in(e) & varying and not e.has(atoms.LAYER)

        def hoisted(e):
            if e not in found:
                found[e] = self.ns.fresh(_hoist_name(e, inputs))
            return make_symbol(found[e], (str(e.shape[0]),))

        def visit(e):
            if isinstance(e, sp.MatAdd):  # U x + V z + b: the invariant terms U x + b together
                fixed = [a for a in e.args if invariant(a)]
                if len(fixed) >= 2 and graph.names_in(sp.MatAdd(*fixed)) & inputs:
                    rest = [visit(a) for a in e.args if a not in fixed]
                    return sp.MatAdd(hoisted(sp.MatAdd(*fixed)), *rest) if rest else hoisted(sp.MatAdd(*fixed))
            if isinstance(e, sp.MatMul) and e.shape[1] == 1 and invariant(e) and graph.names_in(e) & inputs:
                return hoisted(e)
            if not e.args:
                return e
            new = [visit(a) for a in e.args]
            return e if all(a is b for a, b in zip(new, e.args)) else e.func(*new)

        if self.p.tied is not True:
            return first, step, []
        step2 = step.map(visit)  # hoisting pays only in the loop; layer 0 reuses what was hoisted
        reuse = {e: make_symbol(name, (str(e.shape[0]),)) for e, name in found.items()}
        first2 = first.map(lambda e: e.xreplace(reuse))
        return first2, step2, [(name, e) for e, name in found.items()]

    def hoist_layer_lets(self) -> list:
        """Matrix products inside a per-layer let that read nothing per layer (ADMM-Net's
        A_k = rho_k * Dd.T @ Dd + eye: Dd.T @ Dd) are computed once per call, before the layers; sets
        self.layer_let_values (the lets with those products named) and returns [(name, product)]."""
        varying = {d.name for d in self.per_layer} | set(self.layer_lets) | {d.name for d in self.states}
        found: dict = {}

        def visit(e):
            if isinstance(e, sp.MatMul) and e.shape[1] != 1:
                coeff, mats = e.as_coeff_mmul()
                mats = list(mats.args) if isinstance(mats, sp.MatMul) else [mats]
                matrices = [m for m in mats if getattr(m, "is_Matrix", False)]
                scalars = [m for m in mats if not getattr(m, "is_Matrix", False)]
                product = sp.MatMul(*matrices) if len(matrices) >= 2 else None
                if product is not None and not graph.names_in(product) & varying:
                    if product not in found:
                        found[product] = self.ns.fresh("".join(  # Dd.T @ Dd -> DdTDd
                            f"{m.arg.name}T" if isinstance(m, sp.Transpose) and hasattr(m.arg, "name")
                            else getattr(m, "name", "M") for m in matrices))
                    named = make_symbol(found[product], (str(product.shape[0]), str(product.shape[1])))
                    return sp.Mul(coeff, *scalars) * named if (coeff != 1 or scalars) else named
            if not e.args:
                return e
            new = [visit(a) for a in e.args]
            return e if all(a is b for a, b in zip(new, e.args)) else e.func(*new)

        self.layer_let_values = {name: visit(self.p.decl(name).value) for name in self.layer_lets}
        return [(name, product) for product, name in found.items()]

    def batch_all_layers(self, first: Step, step: Step):
        """The products the batch-products pass marked (all_layers(W @ x)) -> a name each, read in layer k as
        NAME[k]; returns the steps reading those names and {name: (matrix, vector)}."""
        from dpc.passes.batch_products import AllLayers
        found: dict = {}
        inputs = {d.name for d in self.inputs}

        def named(e):
            if e not in found:
                found[e] = self.ns.fresh(_hoist_name(e.args[0], inputs))
            return make_symbol(found[e], (str(e.shape[0]),))

        def unmark(e):
            return e.replace(lambda a: isinstance(a, AllLayers), named)

        first, step = first.map(unmark), step.map(unmark)
        return first, step, {name: tuple(e.args[0].as_coeff_matrices()[1]) for e, name in found.items()}

    def emit_all_layers(self, out: _Lines, printer: TorchPrinter, name: str, matrix, vector):
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
        out(f"{name} = torch.matmul({self.expr(printer, vector)}, {operand}).unbind(0)", 2)

    # --- objective ---
    def emit_objective(self, out: _Lines):
        used = graph.names_in(self.p.objective)
        args = [d.name for d in self.inputs] + [d.name for d in self.states if d.name in used]
        out(f"def objective(self, {', '.join(args)}):", 1)
        doc = f"The source objective, one value per sample: {math(self.p.objective)}."
        if self.p.constraints:  # documented choice (docs/language.md): finite values keep a loss trainable
            from dpc.printing import format_constraint
            sets = ", ".join(format_constraint(c) for c in self.p.constraints)
            doc = doc[:-1] + f"; without the indicator of {sets}: a point outside gets this value, not inf."
        out(f'"""{doc}"""', 2)
        names = self.self_names(None)
        printer = TorchPrinter(names, set(args), keepdim=False, like=args[0])
        for name in self.forward_lets():
            if name in used:
                decl = self.p.decl(name)
                out(f"{name} = {self.expr(printer, decl.value, decl)}", 2)
        out(f"return {self.expr(printer, self.p.objective)}", 2)


def _listing(names) -> str:
    """a, b and c."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _hoist_name(expr, inputs) -> str:
    """Wx for W @ x, U_ix_b_i for U_i @ x + b_i: the names read, matrices before the input."""
    if isinstance(expr, sp.MatAdd):
        return "_".join(_hoist_name(a, inputs) for a in expr.args)
    names = graph.names_in(expr)
    return "".join(sorted(names - inputs)) + "".join(sorted(names & inputs))


def _may_overflow(expr) -> bool:
    """Whether a scalar expression holds a power other than a reciprocal (the ones a Python float raises
    OverflowError for)."""
    return any(not (p.args[1].is_number and p.args[1] == -1) for p in expr.atoms(sp.Pow))


def _fstring_text(text: str) -> str:
    """Text to put inside f"...": braces doubled, quotes and backslashes escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("{", "{{").replace("}", "}}")


def _number(value) -> str:
    return repr(float(value)) if not value.is_Integer else repr(float(int(value)))


def emit_module(program: Program, source_name: str) -> str:
    """The generated module's source for a fully compiled program."""
    return Emitter(program, source_name).module()
