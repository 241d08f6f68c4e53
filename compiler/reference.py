"""Reference semantics of the IR: a numpy (float64) evaluator of a compiled Program.

This is the oracle of the differential tests: every generated PyTorch module is compared
with `evaluate` on random data. So it is written to be obviously right rather than fast,
and independently of the torch backend: it reads nothing but the IR (ir.Program and its
sympy math) and the numpy reference registered with each atom in atoms.py
(its `reference` rule: one atom, one place).

Meaning, exactly sympy's, one sample at a time ("column form"): a vector R[n] is an (n, 1)
array, a matrix (m, n) an (m, n) array, a scalar a numpy float64 (so 1/0 is inf, as in
torch); dims are Python ints. Each sympy expression is translated once into a Python closure
`fn(env)` (cached by expression), where env maps names (declarations, dims, temporaries,
sum indices, the layer number `_layer`) to values; the closure is then called per sample
and per layer.

A network runs as follows (see ir.Program and ir.Step):
  - hypers, params, dims; then lets and learned weights in dependency order (a weight's
    value is given, or computed from its initial value: the same for every layer);
  - a param or hyper learned per layer (`learn rho untied`) has one value per layer (given, or its
    value at every layer), and so has every let computed from it; outside the layers (a var's start,
    the objective) it is the value given in params=/hypers=;
  - per sample: the states start at their declared start values; layer 0 applies
    `first_step` (or `step`), later layers `step`; in a step the temporaries are evaluated
    in order, then every assignment at once (all right-hand sides read the previous states); an
    `output EXPR` is read after every layer, from its new states and its copies;
  - a closed-form program evaluates its `closed_form` equations once.

An IR node with no rule raises ReferenceError("no reference rule for <Class>"): never a
silent fallback. numpy is imported lazily, so importing dpc stays fast.

Where the documented meaning and the generated torch code part ways, this follows the
meaning, so a differential test should keep its data away from these points: soft(v, t)
with t < 0 (the module's relu form differs), normalize of a zero vector (nan here, 0 in
F.normalize), entropy of negative entries (nan here), and exact ties in |v| at softss's
k-th largest entry (here the lower index wins; torch.topk does not say which).
"""
from __future__ import annotations

import contextlib
import functools
import operator

import sympy as sp

from dpc import atoms, declare, graph
from dpc.ir import Program, StackRows, Step


class ReferenceError(Exception):
    """The evaluator met an IR node it has no rule for, or a name with no value."""


def _np():
    import numpy
    return numpy


# --- expressions: sympy -> closure(env) -------------------------------------------

def _times(a, b):
    """A factor of a MatMul: matrices multiply as matrices, a scalar (float64, ndim 0) scales."""
    return a @ b if getattr(a, "ndim", 0) and getattr(b, "ndim", 0) else a * b


def _matmul(*factors):
    # right to left: matrix-vector products, as a person evaluates A @ B @ x
    return functools.reduce(lambda acc, f: _times(f, acc), reversed(factors))


@functools.cache
def _sympy_rules():
    """Rules for sympy's own node types: evaluated arguments -> value."""
    np = _np()
    total = lambda *xs: functools.reduce(operator.add, xs)      # noqa: E731
    product = lambda *xs: functools.reduce(operator.mul, xs)    # noqa: E731
    return {
        sp.Add: total,
        sp.Mul: product,
        sp.Pow: lambda base, exp: np.float64(base) ** exp,    # float64: 0 ** -1 is inf, (-1) ** 0.5 nan
        sp.Max: lambda *xs: functools.reduce(np.maximum, xs),
        sp.Min: lambda *xs: functools.reduce(np.minimum, xs),
        # the scalar forms of declared atoms (sp.exp, sp.log, sp.tanh, sp.Abs): the atom's own reference
        **{cls: functools.partial(atom.reference, np) for cls, atom in declare.BY_SCALAR_CLASS.items()},
        sp.MatAdd: total,
        sp.MatMul: _matmul,
        sp.HadamardProduct: product,
        sp.HadamardPower: lambda base, exp: base ** exp,                  # z * z is HadamardPower(z, 2)
        sp.MatPow: lambda base, exp: np.linalg.matrix_power(base, int(exp)),  # A @ A is MatPow(A, 2)
        sp.Transpose: lambda a: a.T,
        sp.Identity: lambda n: np.eye(int(n)),
        sp.ZeroMatrix: lambda rows, cols: np.zeros((int(rows), int(cols))),
        sp.OneMatrix: lambda rows, cols: np.ones((int(rows), int(cols))),
        StackRows: product,                                  # an image stack's rows c*h (dpc.ir)
    }


# Atoms whose arguments are (body, j, dim): the body is evaluated with the sum index j bound
# to 0 .. dim-1, so their reference receives (np, body, dim) with body a function of j.
_BINDERS = (atoms.IndexSum, atoms.IndexVector)


def _lookup(name):
    def value(env):
        try:
            return env[name]
        except KeyError:
            raise ReferenceError(f"no value for '{name}'") from None
    return value


def _constant(expr):
    try:
        value = _np().float64(float(expr))
    except TypeError:  # zoo, I, ...: not a real number
        raise ReferenceError(f"no reference rule for {type(expr).__name__}") from None
    return lambda env: value


def _rule(expr):
    """The function of evaluated arguments for this node type, or ReferenceError."""
    cls = type(expr)
    rule = _sympy_rules().get(cls)
    if rule is None:
        # the atom's own registration, not an inherited one: a new atom must state its rule
        if vars(cls).get("reference") is not None:
            rule = functools.partial(cls.reference, _np())
    if rule is None:
        raise ReferenceError(f"no reference rule for {cls.__name__}")
    return rule


@functools.lru_cache(maxsize=8192)
def compile_expr(expr):
    """The closure env -> value of a sympy expression (cached: the same expression compiles once)."""
    if isinstance(expr, (sp.Symbol, sp.MatrixSymbol)):
        return _lookup(expr.name)
    if expr.is_Number or expr.is_NumberSymbol:
        return _constant(expr)
    rule = _rule(expr)
    if isinstance(expr, _BINDERS):
        body, index, dim = expr.args
        body, dim = compile_expr(body), compile_expr(dim)
        name = index.name
        return lambda env: rule(lambda j: body({**env, name: j}), int(dim(env)))
    if isinstance(expr, atoms.OperatorCG):  # its map is written on a placeholder: bound to each CG direction
        body, placeholder, *rest = expr.args
        body, name = compile_expr(body), placeholder.name
        rest = tuple(compile_expr(a) for a in rest)
        return lambda env: rule(lambda p: body({**env, name: p}), *(a(env) for a in rest))
    args = tuple(compile_expr(a) for a in expr.args)
    return lambda env: rule(*(a(env) for a in args))


def value_of(expr, env):
    """One expression evaluated in env (names -> column-form values)."""
    return compile_expr(expr)(env)


# --- values in and out ---------------------------------------------------------------

def _column(value, shape):
    """A caller's value of a declared shape in column form: vectors (n, 1), scalars float64."""
    np = _np()
    if len(shape) == 0:
        return np.float64(value)
    array = np.asarray(value, dtype=np.float64)
    if len(shape) == 3 and array.ndim == 3:  # R[c, h, w]: (c*h, w), the channels stacked along the rows
        return array.reshape(-1, array.shape[-1])
    return array.reshape(-1, 1) if len(shape) == 1 else array


def _uncolumn(value, shape, dims=None):
    """A column-form value back in the caller's layout: vectors (n,), scalars 0-d, R[c, h, w] (c, h, w)."""
    value = _np().asarray(value, dtype=_np().float64)
    if len(shape) == 3:
        return value.reshape(_dim_size(shape[0], dims), -1, value.shape[-1])
    return value.reshape(-1) if len(shape) == 1 else value


def _dim_size(dim: str, dims) -> int:
    """A dim's size: a literal, a bound dim, or an expression of dims an operator wrote (n - 1)."""
    if dim.isdigit():
        return int(dim)
    if dim in dims:
        return int(dims[dim])
    from dpc.ir import dim_symbol
    expr = dim_symbol(dim)
    return int(expr.xreplace({s: sp.Integer(int(dims[s.name])) for s in expr.free_symbols}))


def _bind_dims(program: Program, shaped, dims) -> dict:
    """Dim name -> int, from the shapes of the values given (decl, array shape without batch axis)."""
    bound = dict(dims or {})
    for decl, shape in shaped:
        if len(shape) != len(decl.shape):
            raise ValueError(f"{decl.name} must have {len(decl.shape)} axes {decl.shape}, got shape {shape}")
        for dim, size in zip(decl.shape, shape):
            if not dim.isdigit() and not dim.isidentifier():
                continue  # an expression of dims (n - 1): checked once its dims are bound
            want = int(dim) if dim.isdigit() else bound.setdefault(dim, int(size))
            if want != size:
                raise ValueError(f"{decl.name}: dim {dim} is {want} but the value has {size}")
    unbound = sorted({dim for d in program.decls for dim in d.shape if dim.isidentifier()} - set(bound))
    if unbound:
        raise ValueError(f"dims {', '.join(unbound)}: no param or input fixes them; give them in dims=")
    return bound


# --- the network -----------------------------------------------------------------------

def _shapes(program: Program, dims) -> dict:
    """Name -> column-form shape of every declared value: () a scalar, (n, 1) a vector, (m, n) a matrix."""
    def shape(d):
        sizes = tuple(_dim_size(dim, dims) for dim in d.shape)
        if len(sizes) == 3:  # R[c, h, w] is (c*h, w) in the algebra
            return (sizes[0] * sizes[1], sizes[2])
        return sizes + ((1,) if len(sizes) == 1 else ())
    return {d.name: shape(d) for d in program.decls}


def _checked(name, value, shapes):
    """A computed value of its declared shape: an IR whose math disagrees with its declarations is an
    error here, never a silent numpy broadcast."""
    if name in shapes and _np().shape(value) != shapes[name]:
        raise ReferenceError(f"{name} evaluates to shape {_np().shape(value)}, but is declared {shapes[name]}")
    return value


def _check_names(program: Program, kinds, given, what: str, required: bool = False):
    """A name the program does not declare (a typo) is an error, not a silently ignored value."""
    declared = {d.name for d in program.of_kind(*kinds)}
    unknown = sorted(set(given or {}) - declared)
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(unknown)}; the program declares {sorted(declared)}")
    missing = sorted(declared - set(given or {}))
    if required and missing:
        raise ValueError(f"{what} {', '.join(missing)} not given")


def _dct_filters(np, k, s0, s1):
    """`param K : R[k, s0, s1] = dct`: the first k elements of the orthonormal 2-D DCT-II basis without its
    constant one, lowest i + j first, then lowest i (docs/language.md, "Filter initialisations"); written here
    from the definition c_i(x) = sqrt((1 if i == 0 else 2) / n) cos(pi i (x + 1/2) / n), not from the backend."""
    def basis(n):
        x = np.arange(n) + 0.5
        return np.array([np.sqrt((1.0 if i == 0 else 2.0) / n) * np.cos(np.pi * i * x / n) for i in range(n)])
    if not 1 <= k <= s0 * s1 - 1:
        raise ValueError(f"the DCT basis of {s0} x {s1} filters has {s0 * s1 - 1} zero-mean elements, not {k}")
    c0, c1 = basis(s0), basis(s1)
    order = sorted([(i, j) for i in range(s0) for j in range(s1) if (i, j) != (0, 0)], key=lambda ij: (sum(ij), ij[0]))
    return np.stack([np.outer(c0[i], c1[j]) for i, j in order[:k]])


def _with_initial_params(program: Program, params, dims):
    """params, plus the value of each `param K = dct` not given (its sizes from digits, dims= or the params
    given). A `param K = random` not given is an error: the reference cannot draw torch's numbers, it takes the
    module's value (net.K) in params=."""
    np = _np()
    params = dict(params or {})
    sizes = dict(dims or {})
    for d in program.of_kind("param"):
        if d.name in params:
            for dim, size in zip(d.shape, np.shape(params[d.name])):
                if dim.isidentifier():
                    sizes.setdefault(dim, int(size))
    for d in program.of_kind("param"):
        if d.name in params or not d.init:
            continue
        if d.init == "random":
            raise ValueError(f"param {d.name} starts at random filters (= random): give the module's value "
                             f"(net.{d.name}) in params=")
        missing = [dim for dim in dict.fromkeys(d.shape) if not dim.isdigit() and dim not in sizes]
        if missing:
            raise ValueError(f"param {d.name} = {d.init} is built from its sizes: give {', '.join(missing)} in dims= "
                             f"or {d.name} in params=")
        k, s0, s1 = (int(dim) if dim.isdigit() else sizes[dim] for dim in d.shape)
        params[d.name] = _dct_filters(np, k, s0, s1)
    return params


def _constants(program: Program, params, hypers, weights, dims, steps, kinds=("let", "weight")):
    """(env of everything fixed across samples, {per-layer weight: its value at every layer}).

    kinds: what is computed after hypers and params (the objective needs lets only)."""
    np = _np()
    hypers, weights, shapes = hypers or {}, weights or {}, _shapes(program, dims)
    env: dict = dict(dims)
    for decl in program.of_kind("hyper"):
        env[decl.name] = np.float64(hypers[decl.name] if decl.name in hypers else float(decl.value))
    for decl in program.of_kind("param"):
        env[decl.name] = _column(params[decl.name], decl.shape)
    per_layer: dict = {}
    for decl in program.of_kind("param", "hyper"):  # learn NAME untied: a copy per layer, given or the value
        if decl.per_layer:
            given = [np.asarray(v, dtype=np.float64) for v in weights[decl.name]] if decl.name in weights else []
            if decl.name in weights and len(given) < steps:
                raise ValueError(f"{decl.name} has {len(given)} layers, {steps} are run")
            per_layer[decl.name] = [_column(v, decl.shape) for v in given] or [env[decl.name]] * steps
    for name in graph.ordered(program, kinds):  # dependencies first: a weight's value reads lets
        decl = program.decl(name)
        if decl.kind == "let":
            env[name] = _checked(name, _column(value_of(decl.value, env), decl.shape), shapes)
            continue
        if name in weights:
            given = np.asarray(weights[name], dtype=np.float64)
            values = list(given) if decl.per_layer else [given] * steps
            if len(values) < steps:
                raise ValueError(f"weight {name} has {len(values)} layers, {steps} are run")
            values = [_column(v, decl.shape) for v in values]
        elif decl.value is not None and decl.value.has(atoms.Xavier):
            raise ValueError(f"weight {name} starts at a random value ({decl.value}): give it in weights=")
        elif decl.per_layer and decl.value is not None and decl.value.has(atoms.LAYER):
            # an initial value that changes with the layer (learn shrink's fit of hqs's lam/beta_t): layer t's
            values = [_checked(name, _column(value_of(decl.value, {**env, atoms.LAYER.name: k + 1}), decl.shape),
                               shapes) for k in range(steps)]
        else:  # untrained: its initial value, the same at every layer
            values = [_checked(name, _column(value_of(decl.value, env), decl.shape), shapes)] * steps
        if decl.per_layer:
            per_layer[name] = values
        else:
            env[name] = values[0]
    # a let of a per-layer value: one per layer, from that layer's copies (env keeps the one of the values
    # given, which a var's start and the objective read)
    layer_lets = graph.per_layer_lets(program) if "let" in kinds else []
    for name in layer_lets:
        per_layer[name] = []
    for k in range(steps if layer_lets else 0):
        layer_env = {**env, **{n: values[k] for n, values in per_layer.items() if n not in layer_lets}}
        for name in layer_lets:
            layer_env[name] = _checked(name, _column(value_of(program.decl(name).value, layer_env),
                                                     program.decl(name).shape), shapes)
            per_layer[name].append(layer_env[name])
    return env, per_layer


def _shaped(program: Program, params, inputs, weights):
    """(decl, shape without batch or layer axis) of every value given, for binding dims."""
    np = _np()
    out = [(d, np.shape(params[d.name])) for d in program.of_kind("param")]
    out += [(d, np.shape(inputs[d.name])[1:]) for d in program.of_kind("input")]
    for d in program.of_kind("weight"):
        if d.name in (weights or {}):
            out.append((d, np.shape(weights[d.name])[1 if d.per_layer else 0:]))
    return out


def _per_layer_name(program: Program, name: str) -> bool:
    """A param or hyper of `learn NAME untied`: its copies are given in weights=, like a weight's."""
    return program.has(name) and program.decl(name).kind in ("param", "hyper") and program.decl(name).per_layer


def _batch(program: Program, inputs) -> int:
    sizes = {len(inputs[d.name]) for d in program.of_kind("input")}
    if len(sizes) > 1:
        raise ValueError(f"inputs have different batch sizes {sorted(sizes)}")
    return sizes.pop() if sizes else 1


def _sample(program: Program, arrays, b: int, kinds) -> dict:
    """Sample b of per-sample values (inputs, or states given to the objective), in column form."""
    return {d.name: _column(arrays[d.name][b], d.shape) for d in program.of_kind(*kinds) if d.name in arrays}


def _apply(step: Step, env: dict, shapes: dict) -> tuple[dict, dict]:
    """One layer: (this layer's temporaries, evaluated in order; every state's new value, read from the
    previous states: simultaneous)."""
    env = dict(env)
    temps = {}
    for name, expr in step.lets:
        env[name] = temps[name] = _checked(name, value_of(expr, env), shapes)
    return temps, {name: _checked(name, value_of(expr, env), shapes) for name, expr in step.assigns}


def _start(decl, env, shapes):
    """A state's start value; none declared means zero."""
    if decl.value is None:
        return _np().zeros(shapes[decl.name]) if decl.shape else _np().float64(0)
    return _checked(decl.name, _column(value_of(decl.value, env), decl.shape), shapes)


def _run_sample(program: Program, env: dict, per_layer: dict, steps: int, shapes: dict) -> list[dict]:
    """Every layer's values for one sample (env: constants and this sample's inputs): the states after
    it and the temporaries it computed (`output` may name a temporary)."""
    states = {d.name: _start(d, env, shapes) for d in program.states}
    outputs = program.of_kind("output")  # `output EXPR`: read after every layer, from its states
    if program.closed_form:
        for name, expr in program.closed_form:  # in order: a later one may read an earlier one
            states[name] = _checked(name, value_of(expr, {**env, **states}), shapes)
        return [{**states, **{d.name: _checked(d.name, value_of(d.value, {**env, **states}), shapes)
                              for d in outputs}}]
    history = []
    until = program.until is not None  # `unroll until`: the general step from the start, until converged
    tol = float(value_of(program.until, env)) if until else None
    for k in range(steps):
        step = program.first_step if (k == 0 and program.first_step is not None and not until) else program.step
        layer = {name: values[k] for name, values in per_layer.items()}
        layer[atoms.LAYER.name] = k + 1  # the layer number t = 1..T
        temps, assigned = _apply(step, {**env, **layer, **states}, shapes)
        previous, states = states, {**states, **assigned}  # a state no assignment names keeps its value
        read = {d.name: _checked(d.name, value_of(d.value, {**env, **layer, **states}), shapes) for d in outputs}
        history.append({**temps, **states, **read})
        if until and _converged(program, previous, states, tol):
            break
    return history


def _converged(program: Program, old: dict, new: dict, tol: float) -> bool:
    """Every vector state changed by at most tol of its new norm (`unroll until`)."""
    np = _np()
    return all(np.linalg.norm(new[d.name] - old[d.name]) <= tol * np.linalg.norm(new[d.name])
               for d in program.states if d.shape)


@contextlib.contextmanager
def perturbed_solves(rng, relative: float):
    """While inside: every conjugate-gradient step of cg / OperatorCG multiplies its A p entrywise by
    1 + relative * N(0, 1) (rng: a numpy Generator), the rounding in which two implementations of the same
    steps differ. The fuzz judge evaluates the reference under it to tell rounding amplified by an unconverged
    CG from a miscompile (dpc.fuzz.check._rounding_in_solves)."""
    token = atoms.SOLVE_ROUNDING.set((rng, float(relative)))
    try:
        yield
    finally:
        atoms.SOLVE_ROUNDING.reset(token)


def evaluate(program: Program, inputs, params=None, hypers=None, weights=None, steps=None, trace=False,
             dims=None):
    """Run the network in float64.

    inputs: {name: array (batch, *shape)}; params: {name: array of the declared shape};
    hypers: {name: float} (missing ones take their default, decl.value); weights: {name: array}
    values of learned weights (decl.kind == "weight"; per_layer ones have shape (steps, *shape)), and the
    copies of a param or hyper learned per layer (`learn rho untied`: shape (steps, *shape); missing, every
    copy is its value in params=/hypers=, which a var's start and the objective read);
    missing ones are computed from their initial-value expression (the same value for every
    layer), except random inits (atoms.Xavier) which must be given. A `param K = dct` not in params= is
    built (numpy, the same filters as the module's); a `param K = random` must be given (the module's net.K).
    steps: layers to run
    (default program.layers). dims: {name: int} for dims no param or input fixes.
    Returns the output (program.output: a var, or an `output EXPR` read after every layer from that
    layer's states and copies) as an array (batch, *shape), or with trace=True the
    list of it after every layer (for closed-form programs: a one-element list).
    """
    np = _np()
    if program.step is None and not program.closed_form:
        raise ReferenceError("the program has neither an update nor a closed form (not compiled yet?)")
    params = _with_initial_params(program, params, dims)
    _check_names(program, ("input",), inputs, "input", required=True)
    _check_names(program, ("param",), params, "param", required=True)
    _check_names(program, ("hyper",), hypers, "hyper")
    _check_names(program, ("weight",), {n: v for n, v in (weights or {}).items() if not _per_layer_name(program, n)},
                 "weight")
    steps = int(steps if steps is not None else (program.layers or 1))
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    output = program.output or program.states[0].name  # before the output pass: the first var
    shape = program.decl(output).shape
    with np.errstate(all="ignore"):  # inf and nan propagate, as in torch
        bound = _bind_dims(program, _shaped(program, params, inputs, weights), dims)
        env, per_layer = _constants(program, params, hypers, weights, bound, steps)
        shapes = _shapes(program, bound)
        runs = [_run_sample(program, {**env, **_sample(program, inputs, b, ("input",))}, per_layer, steps, shapes)
                for b in range(_batch(program, inputs))]
    # `unroll until`: a sample that converged keeps its value while the batch goes on (as the module does)
    length = max(len(run) for run in runs)
    runs = [run + [run[-1]] * (length - len(run)) for run in runs]
    layers = range(len(runs[0])) if trace else [-1]
    if any(output not in runs[0][k] for k in layers):  # a temporary that the first layer's step lacks
        raise ReferenceError(f"the output {output} is not computed in every layer")
    outputs = [np.stack([_uncolumn(run[k][output], shape, bound) for run in runs]) for k in layers]
    return outputs if trace else outputs[0]


def evaluate_objective(program: Program, inputs, states, params=None, hypers=None, dims=None):
    """The program's objective for each sample, (batch,): states {var name: array (batch, *shape)}."""
    np = _np()
    if program.objective is None:
        raise ReferenceError("the program has no objective")
    params = _with_initial_params(program, params, dims)
    _check_names(program, ("input",), inputs, "input", required=True)
    _check_names(program, ("param",), params, "param", required=True)
    _check_names(program, ("hyper",), hypers, "hyper")
    _check_names(program, ("var",), states, "var")
    read = graph.names_in(program.objective)
    missing = sorted(d.name for d in program.states if d.name in read and d.name not in states)
    if missing:
        raise ValueError(f"the objective reads {', '.join(missing)}: give it in states=")
    with np.errstate(all="ignore"):
        shaped = _shaped(program, params, inputs, None)
        shaped += [(d, np.shape(states[d.name])[1:]) for d in program.states if d.name in states]
        env, _ = _constants(program, params, hypers, None, _bind_dims(program, shaped, dims), 1, kinds=("let",))
        values = []
        for b in range(_batch(program, inputs)):
            sample = {**env, **_sample(program, inputs, b, ("input",)), **_sample(program, states, b, ("var",))}
            values.append(np.float64(value_of(program.objective, sample)))
    return np.array(values)
