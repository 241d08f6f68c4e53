"""AST -> IR: resolve names, check every shape, and lower expressions to sympy, in one walk.

Each expression lowers to (sympy expr, shape). A mistake becomes a DpcError at the
smallest offending subexpression; `lower_program` collects one error per statement
so `dpc check` reports them all.
"""
from __future__ import annotations

import builtins
import difflib
import keyword
import math
from dataclasses import dataclass, replace

import sympy as sp
from sympy import HadamardPower, HadamardProduct, Identity, MatrixExpr, Transpose, ZeroMatrix

from dpc import atoms
from dpc.atoms import ShapeError, show_shape
from dpc.errors import DpcError, ErrorList
from dpc.grammar import ast
from dpc.ir import Constraint, Decl, Directive, Program, Step, dim_symbol, make_symbol
from dpc.literals import FLOAT_MAX, LiteralError, parse_number

# Names a generated module cannot give a value: Python's keywords and builtins, what the
# module's code itself uses, and nn.Module's attributes (a param called `eval` would break it).
_MODULE_ATTRIBUTES = {
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children", "compile",
    "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer",
    "get_extra_state", "get_parameter", "get_submodule", "half", "ipu", "load_state_dict", "modules", "mtia",
    "named_buffers", "named_children", "named_modules", "named_parameters", "parameters", "register_backward_hook",
    "register_buffer", "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook",
    "register_module", "register_parameter", "register_state_dict_post_hook", "register_state_dict_pre_hook",
    "requires_grad_", "set_extra_state", "set_submodule", "share_memory", "state_dict", "to", "to_empty",
    "train", "training", "type", "xpu", "zero_grad", "objective", "steps", "trace",
}
# Module-level names of a generated module: its imports and helpers (a class named `torch` would shadow them).
MODULE_NAMES = {"torch", "nn", "F"}
RESERVED = (set(keyword.kwlist) | set(dir(builtins)) | _MODULE_ATTRIBUTES | MODULE_NAMES
            | {"self", "per_layer_parameters", "constrain", "info", "last_info"})  # the module's own keywords
CLASS_RESERVED = set(keyword.kwlist) | set(dir(builtins)) | MODULE_NAMES

SETS = {"nonneg": 0, "box": 2, "onehot": 0, "simplex": 0, "binary": 0, "ball": 1, "l1ball": 1, "sparse": 1}


@dataclass
class _Entry:
    symbol: object
    shape: tuple
    kind: str


class _Env:
    """Names visible to an expression: declarations, update temporaries, sum indices."""

    def __init__(self, entries: dict[str, _Entry], dims: tuple[str, ...], where: str, failed=frozenset()):
        self.entries = dict(entries)
        self.dims = dims
        self.where = where          # for messages: "in the objective", ...
        self.indices: dict[str, str | None] = {}
        self.failed = failed        # names whose declaration had an error: uses are not errors again
        self.hidden: dict[str, str] = {}  # declared names this expression may not read -> their kind
        self.what = "this value"          # what is lowered, for the message when it reads a hidden name

    def child(self) -> "_Env":
        env = _Env(self.entries, self.dims, self.where, self.failed)
        env.indices = dict(self.indices)
        env.hidden, env.what = self.hidden, self.what
        return env


class FollowOn(DpcError):
    """A use of a name whose declaration already failed: reported once, at the declaration, so the
    error list carries nothing for it (no cascade of 'undefined name' errors)."""

    def __init__(self):
        super().__init__("follow-on error")
        self.diagnostics = []


def _err(message: str, node, hint: str | None = None) -> DpcError:
    return DpcError(message, node.span if node is not None else None, hint)


def _broadcast(scalar, shape_expr):
    """A scalar meeting a vector or matrix: an explicit all-ones value of that shape, scaled, so that
    no pass mistakes it for a scalar (D @ (c * ones) is c times the row sums of D, not c * D)."""
    rows, cols = shape_expr
    if scalar == 0:
        return ZeroMatrix(rows, cols)
    return scalar * atoms.Ones(rows, cols)


def lower_each(nodes, env):
    """Lower several independent subexpressions, reporting every one that fails (not just the first)."""
    results, diagnostics = [], []
    for node in nodes:
        try:
            results.append(_lower(node, env))
        except DpcError as e:
            diagnostics.extend(e.diagnostics)
            results.append(None)
    if any(r is None for r in results):
        if not diagnostics:
            raise FollowOn()
        raise DpcError(diagnostics[0].message, diagnostics=diagnostics)
    return results


def _number(node: ast.Number):
    """A literal's exact value; one float64 cannot hold is an error at the literal."""
    try:
        return parse_number(node.text)
    except LiteralError as e:
        raise _err(e.message, node, e.hint) from None


def _is_zero(expr) -> bool:
    return isinstance(expr, ZeroMatrix) or (not isinstance(expr, MatrixExpr) and expr == 0)


# --- expressions ----------------------------------------------------------------

def _lower(node: ast.Expr, env: _Env):
    if isinstance(node, ast.Number):
        return _number(node), ()
    if isinstance(node, ast.Name):
        return _name(node, env)
    if isinstance(node, ast.Neg):
        # a chain of minus signs (----x) negates once or not at all: sympy's negation of a matrix expression
        # re-canonicalises the whole of it, so 3,000 of them one by one took 5.6 s (quadratic)
        count, inner = 0, node
        while isinstance(inner, ast.Neg):
            count, inner = count + 1, inner.operand
        expr, shape = _lower(inner, env)
        return (-expr if count % 2 else expr), shape
    if isinstance(node, ast.BinOp):
        return _checked_number(node, *_binop(node, env))
    if isinstance(node, ast.Transpose):
        expr, shape = _lower(node.operand, env)
        if len(shape) == 2:
            return Transpose(expr).doit() if isinstance(expr, Transpose) else Transpose(expr), (shape[1], shape[0])
        if len(shape) == 0:
            return expr, shape
        if len(shape) == 3:
            raise _err(f"cannot transpose an image stack ({show_shape(shape)})", node,
                       "dpc applies operators' adjoints itself where the calculus needs them")
        raise _err(f"cannot transpose a vector ({show_shape(shape)})", node,
                   "vectors are columns; write v @ w for an inner product, A.T @ v for a product with A^T")
    if isinstance(node, ast.Call):
        return _checked_number(node, *_call(node, env))
    if isinstance(node, ast.Index):
        return _index(node, env)
    if isinstance(node, ast.IndexSum):
        return _index_sum(node, env)
    raise _err(f"unsupported expression {type(node).__name__}", node)


def _check_power(node, base, exponent):
    """A power of literals is computed exactly by sympy: 2^-1e29 would take forever. Estimate its size
    from logarithms first and refuse one that float64 cannot hold, before it is computed."""
    b, e = complex(sp.N(base, 20)), complex(sp.N(exponent, 20))
    if b.imag or e.imag or b.real == 0 or abs(b.real) == 1:
        return  # 0^e, 1^e, (-1)^e: small, or no real value (reported after)
    size = e.real * math.log2(abs(b.real))  # log2 of |base^exponent|
    if size > 1024:
        raise _err("this power of literals gives a number float64 cannot hold", node,
                   "write a smaller number (or rescale the problem)")
    if size < -1075:  # below the smallest subnormal: float64 rounds it to 0, and so does dpc
        return "underflow"
    return None


def _checked_number(node, value, shape):
    """Arithmetic on literals is done while lowering (sympy folds 2 * 0.5 to 1): what it gives must be a
    number float64 holds, like any literal."""
    if shape != () or not value.is_number:
        return value, shape
    if value.has(sp.zoo, sp.nan) or value.is_real is False:
        raise _err("this arithmetic on literals has no finite real value (a division by zero, the log of 0, "
                   "or a root or log of a negative number)", node)
    if not value.is_finite or abs(value) > FLOAT_MAX:
        raise _err("this arithmetic on literals gives a number float64 cannot hold", node,
                   "write a smaller number (or rescale the problem)")
    return value, shape  # a result below float64's range is not a mistake: it rounds to 0 (exp(-1e4))


def _name(node: ast.Name, env: _Env):
    entry = env.entries.get(node.id)
    if entry is not None:
        return entry.symbol, entry.shape
    if node.id in env.failed:
        raise FollowOn()
    if node.id in atoms.ATOMS:
        raise _err(f"'{node.id}' is a function, not a value", node,
                   f"call it: {atoms.ATOMS[node.id].signature}")
    if node.id in env.dims:
        raise _err(f"'{node.id}' is a dim (a size), not a value", node, "use eye(n) for an identity of size n")
    if node.id in env.indices:
        raise _err(f"sum index '{node.id}' can only be used to index, as in C[{node.id}]", node)
    if node.id in env.hidden:  # declared, but not readable here (an input in a derive option)
        kind = env.hidden[node.id]
        per_sample = " (a value per sample)" if kind in ("input", "var", "temp") else ""
        raise _err(f"{node.id} is {'an' if kind[0] in 'aeiou' else 'a'} {kind}{per_sample}: {env.what} is one value "
                   f"for the whole network and can read only {_readable(env)}", node,
                   f"compute {env.what} from {_readable(env)} (declare a let for it if it needs a formula)")
    known = list(env.entries) + list(env.indices)
    close = difflib.get_close_matches(node.id, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else "declare it with input, param, hyper, let or var"
    raise _err(f"undefined name '{node.id}' {env.where}", node, hint)


def _binop(node: ast.BinOp, env: _Env):
    (left, ls), (right, rs) = lower_each((node.left, node.right), env)
    op = node.op
    if op in "+-":
        if ls != rs and ls != () and rs != ():
            raise _err(f"cannot {'add' if op == '+' else 'subtract'} {show_shape(ls)} and {show_shape(rs)}: "
                       "shapes differ", node)
        if ls == () and rs != ():
            left = _broadcast(left, right.shape)
        if rs == () and ls != ():
            right = _broadcast(right, left.shape)
        return (left + right if op == "+" else left - right), (ls or rs)
    if op == "*":
        if ls == () or rs == ():
            expr = left * right if ls == () else right * left
            return expr, ls or rs
        if ls == rs:
            return HadamardProduct(left, right), ls
        raise _err(f"cannot multiply {show_shape(ls)} by {show_shape(rs)} elementwise: shapes differ", node,
                   "for a matrix product write @")
    if op == "/":
        if rs != ():
            return _entrywise_division(node, env, left, ls, right, rs)
        if right.is_number and right == 0:
            raise _err("division by zero", node.right)
        return left * (1 / right) if ls != () else left / right, ls
    if op == "@":
        return _matmul(node, left, ls, right, rs)
    if op == "^":
        if ls != () or rs != ():
            raise _err(f"^ needs scalars, got {show_shape(ls)} ^ {show_shape(rs)}", node,
                       "for the squared norm of a vector write sqnorm(v)")
        if left.is_number and right.is_number and _check_power(node, left, right) == "underflow":
            return sp.Integer(0), ()  # what float64 makes of it (2^-1e29 is never computed exactly)
        return left ** right, ()
    raise _err(f"unknown operator {op}", node)  # pragma: no cover - the grammar has no others


def _entrywise_division(node, env, left, ls, right, rs):
    """a / b with b a vector or matrix: entrywise, a of b's shape or a scalar (broadcast). b must be provably
    positive entry by entry (convexity.positive_given: the atoms' declared signs, sympy's assumptions), or so
    once the scalar hypers and lets it reads are > 0, which then become requirements (requirements.py)."""
    from dpc.convexity import entry_sign, positive_given
    from dpc.declare import declared
    if ls != () and ls != rs:
        raise _err(f"cannot divide {show_shape(ls)} by {show_shape(rs)} entrywise: shapes differ", node,
                   "divide by a scalar, or by a value of the numerator's shape")
    constants = {n for n, e in env.entries.items() if e.kind in ("hyper", "let") and e.shape == ()}
    if positive_given(right, constants) is None:
        from dpc.grammar.unparse import unparse
        text = unparse(node.right)
        shown = text if isinstance(node.right, (ast.Name, ast.Call)) else f"({text})"
        sign = entry_sign(right)
        fixed = f"({text} + 1e-8)" if sign == "nonnegative" else f"(abs({text}) + 1e-8)"
        signs = {k: ", ".join(a.name for a in declared() if a.sign == k and _takes_vector(a))
                 for k in ("positive", "nonnegative")}
        raise _err(f"{text} may be zero: an entrywise division needs a denominator dpc can show is > 0 in every "
                   f"entry: {signs['positive']} of anything, or c + v with c > 0 and v >= 0 ({signs['nonnegative']}"
                   "; a hyper or let c is then required to be > 0)", node.right,
                   f"write `{fixed}` in place of `{shown}`" + ("" if sign else " (or exp of it, if it may be negative)"))
    reciprocal = HadamardPower(right, -1)
    if ls == ():
        return (reciprocal if left == 1 else left * reciprocal), rs
    return HadamardProduct(left, reciprocal), rs


def _takes_vector(atom) -> bool:
    """Whether an atom maps a vector to a vector of its shape (an entrywise function: what a denominator is
    built of)."""
    try:
        return atom.shape([("n",)]) == ("n",)
    except (ShapeError, TypeError):
        return False


def _matmul(node, left, ls, right, rs):
    if ls == () or rs == ():
        raise _err("@ needs vectors or matrices; use * to scale by a scalar", node)
    if len(ls) == 3 or len(rs) == 3:
        raise _err(f"@ needs vectors or matrices, not the image stack {_describe(node.left if len(ls) == 3 else node.right, ls if len(ls) == 3 else rs)}",
                   node, "apply an operator to images (conv(K, u), grad2d(u)); sum(a * b) is their inner product")
    inner_l = ls[-1] if len(ls) == 2 else ls[0]
    inner_r = rs[0]
    if inner_l != inner_r:
        raise _err(f"cannot multiply {_describe(node.left, ls)} by {_describe(node.right, rs)}: "
                   f"inner sizes {inner_l} and {inner_r} differ", node)
    if len(ls) == 1 and len(rs) == 1:
        return atoms.Dot(left, right), ()
    if len(ls) == 1:  # v @ A = A^T v, a vector
        return Transpose(right) * left, (rs[1],)
    if len(rs) == 1:
        return left * right, (ls[0],)
    return left * right, (ls[0], rs[1])


def _describe(node, shape):
    from dpc.grammar.unparse import unparse
    return f"{unparse(node)} : {show_shape(shape)}"


def _call(node: ast.Call, env: _Env):
    spec = atoms.ATOMS.get(node.func)
    if spec is None:
        close = difflib.get_close_matches(node.func, list(atoms.ATOMS), n=3)
        hint = ("did you mean " + " or ".join(f"{c}()" for c in close) + "?") if close else \
            "known functions: " + ", ".join(sorted(atoms.ATOMS))
        raise DpcError(f"unknown function '{node.func}'", node.func_span, hint)
    options = _options(node, spec)
    if node.func == "eye":
        return _eye(node, env)
    if node.func == "softss" and env.where != "in the update":  # its share grows with the layer number
        raise _err("softss(v, t, p, pmax) needs a layer number, so it can only be used in the update", node,
                   "use soft(v, t) here")
    lowered = lower_each(node.args, env)
    try:
        shape = spec.rule([s for _, s in lowered], **options)
    except ShapeError as e:
        raise _err(f"{spec.signature} {e}", node, getattr(e, "hint", None)) from None
    return spec.build(*[e for e, _ in lowered], **options), shape


def _options(node: ast.Call, spec) -> dict:
    """A call's keyword arguments: only those its declaration names (`options`), each an integer literal
    (softmax(A, axis = 1))."""
    known = dict(getattr(spec, "options", ()))
    out = {}
    for key, value in node.kwargs:
        if key not in known:
            written = value.text if isinstance(value, ast.Number) else value.id if isinstance(value, ast.Name) else "..."
            only = next(iter(known)) if len(known) == 1 else None
            raise _err(f"{spec.signature} takes no keyword argument '{key}'", node,
                       f"write `{only} = {written}` in place of `{key} = {written}` ({only}: {known[only]})" if only
                       else f"its keyword arguments: {', '.join(known)}" if known else
                       f"delete `, {key} = {written}`: {node.func} takes positional arguments only")
        words = known[key] if isinstance(known[key], tuple) else None  # a word option: pad = circular
        if words is not None:
            if not (isinstance(value, ast.Name) and value.id in words):
                written = value.id if isinstance(value, ast.Name) else "..."
                raise _err(f"{node.func}(..., {key} = {written}): {key} is one of {' | '.join(words)}", value,
                           f"write `{key} = {words[0]}` in place of `{key} = {written}`")
            out[key] = words.index(value.id)
            continue
        if not (isinstance(value, ast.Number) and value.text.isdigit()):
            raise _err(f"{node.func}(..., {key} = ...) takes a non-negative integer literal", value,
                       f"write e.g. {key} = 1")
        out[key] = int(value.text)
    return out


def _eye(node: ast.Call, env: _Env):
    if len(node.args) != 1 or not isinstance(node.args[0], (ast.Name, ast.Number)):
        raise _err("eye(n) takes one dim name or integer", node)
    arg = node.args[0]
    size = arg.id if isinstance(arg, ast.Name) else arg.text
    if isinstance(arg, ast.Name) and size not in env.dims:
        raise _err(f"eye({size}): '{size}' is not a declared dim", arg)
    if isinstance(arg, ast.Number) and (not size.isdigit() or int(size) == 0):  # eye(2.5), eye(1e-30), eye(0)
        raise _err(f"eye({size}): a size is a declared dim or a whole number of at least 1", arg,
                   "write a declared dim, e.g. eye(n)")
    return Identity(dim_symbol(size)), (size, size)


def _index(node: ast.Index, env: _Env):
    if node.index not in env.indices:
        raise DpcError(f"'{node.index}' is not a sum index here", node.index_span,
                       f"write the sum as sum_{node.index} ...")
    expr, shape = _lower(node.operand, env)
    if not shape:
        raise _err("cannot index a scalar", node)
    if len(shape) == 3:
        raise _err(f"cannot index an image stack ({show_shape(shape)})", node, "use sum(...) or norm1(...) of it")
    bound = env.indices[node.index]
    if bound is not None and bound != shape[0]:
        raise _err(f"index {node.index} ranges over {bound} but indexes a dimension of size {shape[0]}", node)
    env.indices[node.index] = shape[0]
    j = sp.Symbol(node.index, integer=True)
    return _indexed(expr, j), (() if len(shape) == 1 else (shape[1],))


def _indexed(expr, j):
    """Entry j of a vector (row j of a matrix), taken through sums and scalings: (z + 0.5)[j] is
    z[j] + 0.5, ones[j] is 1. (sympy cannot build the entry of a sum holding a broadcast.)"""
    vector = expr.shape[1] == 1
    if isinstance(expr, sp.MatAdd):
        parts = [_indexed(a, j) for a in expr.args]
        return sp.Add(*parts) if vector else sp.MatAdd(*parts)
    if isinstance(expr, sp.MatMul):
        coeff, mats = expr.as_coeff_matrices()
        if coeff != 1 and len(mats) == 1:
            return coeff * _indexed(mats[0], j)
    if isinstance(expr, atoms.Ones):
        return sp.Integer(1) if vector else atoms.Ones(expr.shape[1])
    if isinstance(expr, ZeroMatrix):
        return sp.Integer(0) if vector else ZeroMatrix(expr.shape[1], 1)
    return atoms.Entry(expr, j) if vector else atoms.Row(expr, j)


def _index_named(node, name: str):
    """The first sum over an index called `name` inside an expression, or None (iterative: deep input)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.IndexSum) and item.index == name:
            return item
        if isinstance(item, ast.Expr):
            stack.extend(v for v in vars(item).values() if isinstance(v, (ast.Expr, tuple)))
        elif isinstance(item, tuple):
            stack.extend(v for v in item if isinstance(v, (ast.Expr, tuple)))
    return None


def _index_sum(node: ast.IndexSum, env: _Env):
    if node.index in env.entries or node.index in env.dims or node.index in env.indices:
        raise _err(f"sum_{node.index}: the index '{node.index}' is already a name here", node,
                   "name the index something else, e.g. sum_j ... [j]")
    inner = env.child()
    inner.indices[node.index] = None
    body, shape = _lower(node.body, inner)
    dim = inner.indices[node.index]
    if dim is None:
        raise _err(f"sum_{node.index}: the body never indexes with {node.index}", node)
    if shape != ():
        raise _err(f"sum_{node.index} needs a scalar body, got {show_shape(shape)}", node.body)
    j = sp.Symbol(node.index, integer=True)
    if not body.has(j):  # the entries cancelled ((b - b)[j] is 0): dim copies of a constant
        return body * dim_symbol(dim), ()
    return atoms.IndexSum(body, j, dim_symbol(dim)), ()


# --- environments ------------------------------------------------------------------

def _env(program: Program, kinds, where: str, extra: dict | None = None) -> _Env:
    entries = {d.name: _Entry(d.symbol, d.shape, d.kind) for d in program.decls if d.kind in kinds}
    if extra:
        entries.update(extra)
    env = _Env(entries, program.dims, where)
    env.hidden = {d.name: d.kind for d in program.decls if d.name not in entries}
    return env


def _readable(env: _Env) -> str:
    order = ("input", "param", "hyper", "let", "var")
    kinds = [f"{k}s" for k in order if any(e.kind == k for e in env.entries.values())]
    return " and ".join([", ".join(kinds[:-1]), kinds[-1]]) if len(kinds) > 1 else (kinds[0] if kinds else "numbers")


PARAM_INITS = {"dct": "the 2-D DCT-II basis without its constant element (zero-mean filters, as TNRD)",
               "random": "zero-mean random filters of unit norm (torch's generator)"}


def _param_init(name: str, shape: tuple[str, ...], s: ast.DeclStmt) -> str:
    """`param K : R[k, s, s] = dct | random`: the filter initialisation the constructor builds when K is not
    given. The word, checked against the param's shape."""
    node = s.value
    if not isinstance(node, ast.Name) or node.id not in PARAM_INITS:
        word = node.id if isinstance(node, ast.Name) else None
        close = difflib.get_close_matches(word, list(PARAM_INITS), n=1) if word else []
        from dpc.grammar.unparse import unparse
        hint = (f"write `{close[0]}` in place of `{word}`" if close else
                f"write `dct` (or `random`) in place of `{unparse(node)}`, or drop `= {unparse(node)}` and give "
                f"{name} to the constructor")
        raise DpcError(f"a param's initial value is a word, one of {', '.join(PARAM_INITS)} (or a tensor given to "
                       f"the constructor)", node.span, hint)
    if node.id == "dct" and len(shape) != 3 or node.id == "random" and len(shape) not in (2, 3):
        want = "a filter bank R[k, s, s]" if node.id == "dct" else "a filter bank R[k, s, s] or one kernel R[s, s]"
        raise DpcError(f"`= {node.id}` builds {want}, but {name} is {show_shape(shape)}",
                       s.type.span if s.type else node.span,
                       f"drop `= {node.id}` and give {name} to the constructor")
    if node.id == "dct" and all(d.isdigit() for d in shape) and int(shape[0]) > int(shape[1]) * int(shape[2]) - 1:
        most = int(shape[1]) * int(shape[2]) - 1
        raise DpcError(f"the DCT basis of {shape[1]} x {shape[2]} filters has {most} zero-mean elements, not "
                       f"{shape[0]}", s.type.span if s.type else node.span,
                       f"write R[{most}, {shape[1]}, {shape[2]}]")
    return node.id


def lower_expr(program: Program, node: ast.Expr, kinds=("param", "hyper", "let", "weight"),
               where: str = "here", extra: dict | None = None, what: str | None = None):
    """Lower one AST expression against a program's declarations; used by passes for their arguments.
    `what` names the value for an error when it reads a declared name it may not (an input in a step)."""
    try:
        env = _env(program, kinds, where, extra)
        env.what = what or env.what
        return _lower(node, env)
    except DpcError as e:
        raise e.with_source(program.source) from None


def lower_scalar(program: Program, node: ast.Expr, what: str, **kw):
    expr, shape = lower_expr(program, node, what=kw.pop("what", what), **kw)
    if shape != ():
        raise DpcError(f"{what} must be a scalar, got {show_shape(shape)}", node.span).with_source(program.source)
    return expr


def depends_on(expr, names) -> bool:
    return any(getattr(s, "name", None) in names for s in expr.free_symbols)


# --- statements ------------------------------------------------------------------

class _Lowering:
    def __init__(self, tree: ast.Program):
        self.tree = tree
        self.errors = ErrorList()
        self.name = None
        self.dims: list[str] = []
        self.decls: list[Decl] = []
        self.objective = None
        self.term_spans = []
        self.constraints: list[Constraint] = []
        self.step = None
        self.directives: list[Directive] = []
        self.failed: set[str] = set()   # names whose declaration had an error
        self.unknown_dims: set[str] = set()  # each undeclared dim is reported once, where first used
        self.entries: dict[str, _Entry] = {}  # a declaration's entry, made once (see env)
        self.visible: dict = {}  # kinds -> (declarations seen, their entries): see env
        self.names: set[str] = set()  # every declared name, for the declared-twice check
        self.update_spans: tuple = ()   # (("update", span),): where the update is written, for errors about it

    # helpers
    def program(self) -> Program:
        return Program(self.name or "Network", self.tree.file, self.tree.source, tuple(self.dims),
                       tuple(self.decls), self.objective, tuple(self.constraints), self.step,
                       term_spans=tuple(self.term_spans),
                       directive_spans=self.update_spans + tuple((d.kind, d.span) for d in self.directives))

    def env(self, kinds, where, extra=None):
        """The names visible to a statement. Entries are made once per declaration (a program of thousands
        of declarations must not rebuild every sympy symbol for every statement)."""
        # declarations are only appended while lowering: each kinds' entries grow from where they stopped
        # (rebuilding them per statement made a program of thousands of hypers quadratic)
        seen, visible = self.visible.get(kinds, (0, {}))
        for d in self.decls[seen:]:
            if d.kind in kinds:
                entry = self.entries.get(d.name)
                if entry is None or entry.kind != d.kind:
                    entry = self.entries[d.name] = _Entry(d.symbol, d.shape, d.kind)
                visible[d.name] = entry
        self.visible[kinds] = (len(self.decls), visible)
        entries = dict(visible)
        if extra:
            entries.update(extra)
        return _Env(entries, tuple(self.dims), where, frozenset(self.failed))

    def check_type(self, t: ast.TypeSpec):
        if len(t.dims) > 3:
            raise DpcError(f"types have at most three dims (R[c, h, w], an image of c channels), got {len(t.dims)}",
                           t.span, "write R[c, h, w] for c images of h x w, R[h, w] for one")
        errors = ErrorList()
        for d in t.dims:
            if not d.isdigit() and d not in self.dims:
                if d in self.unknown_dims:
                    continue
                self.unknown_dims.add(d)
                errors.add(f"'{d}' is not a declared dim", t.span, f"add it to `dims`, e.g. dims {d}")
            elif d.isdigit() and int(d) == 1:  # in the algebra an R[n, 1] matrix is an R[n] vector
                errors.add("a size of 1 in a type is ambiguous: R[n, 1] would be the vector R[n], and R[1] "
                           "the scalar R", t.span, "write R[n] for a vector or R for a scalar")
        errors.raise_if_any()
        return tuple(t.dims)

    def run(self) -> tuple[Program, list[Directive]]:
        for stmt in self.tree.statements:
            try:
                self.statement(stmt)
            except DpcError as e:
                self.errors.items.extend(e.diagnostics)
        if self.name is None:
            self.errors.add("the program has no `network NAME` line",
                            ast.Span(self.tree.file, 1, 1, 1, 2), "start it with e.g. `network LISTA`")
        if self.name is not None and not self.declared("var"):
            self.errors.add("the program declares no `var` (what is solved for, or the state)",
                            ast.Span(self.tree.file, 1, 1, 1, 2))
        if self.name is not None and not self.declared("input"):
            self.errors.add("the program declares no `input`: a network maps a batch of inputs to outputs",
                            ast.Span(self.tree.file, 1, 1, 1, 2), "declare one, e.g. input x : R[m]")
        if self.objective is None and self.step is None and not self.errors.items:
            self.errors.add("the program has neither `minimize` nor `update`",
                            ast.Span(self.tree.file, 1, 1, 1, 2))
        self.errors.raise_if_any(self.tree.source)
        return self.program(), self.directives

    def declared(self, kind: str) -> bool:
        """Whether a declaration of this kind was written (even one with an error)."""
        return any(d.kind == kind for d in self.decls) or any(
            isinstance(s, ast.DeclStmt) and s.kind == kind for s in self.tree.statements)

    def statement(self, s):
        handler = getattr(self, "_" + type(s).__name__)
        handler(s)

    def _declare(self, decl: Decl, ident: ast.Ident):
        if decl.name in self.names or decl.name in self.dims:
            raise DpcError(f"'{decl.name}' is declared twice", ident.span)
        if decl.name in atoms.ATOMS:
            raise DpcError(f"'{decl.name}' is a function name and cannot be declared", ident.span)
        if decl.name in RESERVED or decl.name.startswith("_"):
            self.decls.append(decl)  # still declared, so its uses do not cascade into more errors
            self.names.add(decl.name)
            raise DpcError(f"'{decl.name}' cannot name a value in the generated PyTorch module "
                           "(a Python keyword or builtin, or an nn.Module attribute)", ident.span,
                           f"rename it, e.g. {decl.name.strip('_')}_ or my_{decl.name.strip('_')}")
        self.decls.append(decl)
        self.names.add(decl.name)

    # statements
    def _NetworkStmt(self, s: ast.NetworkStmt):
        if self.name is not None:
            raise DpcError("a program names one network", s.span)
        name = s.name.id
        if not name.isidentifier() or name.startswith("_") or name in CLASS_RESERVED:
            self.name = "Network"  # go on checking the rest of the program
            raise DpcError(f"'{name}' cannot name the network's class: it is a Python keyword or builtin, or "
                           "a name the generated module uses itself (torch, nn, F)", s.name.span,
                           f"rename it, e.g. {name.strip('_').capitalize() or 'Net'}Net")
        self.name = name

    def _DimsStmt(self, s: ast.DimsStmt):
        for ident in s.names:
            if ident.id in RESERVED or ident.id.startswith("_"):
                raise DpcError(f"'{ident.id}' cannot name a dim in the generated module", ident.span)
            if ident.id in self.dims or ident.id in self.names:
                raise DpcError(f"'{ident.id}' is declared twice", ident.span)
            self.dims.append(ident.id)

    def _DeclStmt(self, s: ast.DeclStmt):
        try:
            self._declaration(s)
        except DpcError:
            if s.name.id not in self.names:
                self.failed.add(s.name.id)  # later uses of the name are not errors of their own
            raise

    def _declaration(self, s: ast.DeclStmt):
        kind, name = s.kind, s.name.id
        clash = _index_named(s.value, name)
        if clash is not None:  # `var i : R = sum_i ...`: the index would read as the value being declared
            raise DpcError(f"sum_{name}: the index '{name}' is the name being declared", clash.span,
                           "name the index something else, e.g. sum_j ... [j]")
        if kind == "input":
            shape = self.check_type(s.type)
            if len(shape) == 0:
                raise DpcError(f"input {name} is {show_shape(shape)}; inputs are vectors R[n] or matrices R[m, n], "
                               "one per sample (a batch of them is a (batch, n) or (batch, m, n) tensor)",
                               s.type.span if s.type else s.span,
                               f"declare it as a vector, e.g. input {name} : R[n]")
            self._declare(Decl(name, kind, shape, None, s.name.span), s.name)
        elif kind == "param":
            shape = self.check_type(s.type)
            init = _param_init(name, shape, s) if s.value is not None else ""
            self._declare(Decl(name, kind, shape, None, s.name.span, init=init), s.name)
        elif kind == "hyper":
            value, shape = _lower(s.value, self.env(("hyper",), f"in the default of {name}"))
            if shape != () or value.free_symbols:
                raise _err(f"the default of hyper {name} must be a number", s.value)
            self._declare(Decl(name, "hyper", (), value, s.name.span), s.name)
        elif kind == "let":
            value, shape = _lower(s.value, self.env(("param", "hyper", "let"), f"in let {name}"))
            if s.type is not None:
                declared = self.check_type(s.type)
                if declared != shape:
                    raise _err(f"let {name} is declared {show_shape(declared)} but computes {show_shape(shape)}",
                               s.value)
            self._declare(Decl(name, "let", shape, value, s.name.span), s.name)
        elif kind == "var":
            shape = self.check_type(s.type)
            start = ZeroMatrix(*make_symbol(name, shape).shape) if shape else sp.Integer(0)
            if s.value is not None:
                start = self._start(name, shape, s.value)
            self._declare(Decl(name, "var", shape, start, s.name.span), s.name)

    def _start(self, name, shape, node):
        value, vshape = _lower(node, self.env(("input", "param", "hyper", "let", "var"),
                                              f"in the start of {name}"))
        if vshape == () and shape != ():
            return _broadcast(value, make_symbol(name, shape).shape)
        if vshape != shape:
            raise _err(f"var {name} : {show_shape(shape)} cannot start at a {show_shape(vshape)}", node)
        return value

    def _MinimizeStmt(self, s: ast.MinimizeStmt):
        if self.objective is not None:
            raise DpcError("a program has one `minimize`", s.span)
        if self.step is not None:
            raise DpcError("a program is either `minimize` or `update`, not both", s.span)
        env = self.env(("input", "param", "hyper", "let", "var"), "in the objective")
        total = sp.Integer(0)
        errors, failed = ErrorList(), False
        for sign, term in _terms(s.expr):
            try:
                value, shape = _lower(term, env)
                if shape != ():
                    raise _err(f"the objective must be a scalar; this term is {show_shape(shape)}", term,
                               "wrap vectors in sqnorm(), norm1(), sum(), ...")
            except DpcError as e:  # every term's errors, not just the first term's
                errors.items.extend(e.diagnostics)
                failed = True
                continue
            self.term_spans.append((sign * value, term.span))
            total = total + sign * value
        if failed:
            self.objective = sp.Integer(0)  # one objective was written: do not also report it missing
            errors.raise_if_any()
            raise FollowOn()
        vars_ = {d.name for d in self.decls if d.kind == "var"}
        if not depends_on(total, vars_):
            raise _err("the objective does not depend on any var", s.expr)
        self.objective = total

    def _SubjectToStmt(self, s: ast.SubjectToStmt):
        env = self.env(("param", "hyper", "let"), "in a constraint")
        errors = ErrorList()
        for c in s.constraints:
            try:
                self.constraints.append(self._constraint(c, env))
            except FollowOn:
                pass
            except DpcError as e:
                errors.items.extend(e.diagnostics)
        self.constraints = _merge_boxes(self.constraints)
        errors.raise_if_any()

    def _constraint(self, c, env) -> Constraint:
        vars_ = {d.name: d for d in self.decls if d.kind == "var"}
        for ident in (c.var,) if isinstance(c, ast.Member) else ():
            if ident.id in self.failed:
                raise FollowOn()
        if isinstance(c, ast.Member):
            if c.var.id not in vars_:
                raise DpcError(f"'{c.var.id}' is not a var; constraints apply to vars", c.var.span)
            if c.set.id not in SETS:
                raise DpcError(f"unknown set '{c.set.id}'", c.set.span, "known sets: " + ", ".join(SETS))
            if len(c.args) != SETS[c.set.id]:
                raise DpcError(f"set {c.set.id} takes {SETS[c.set.id]} arguments, got {len(c.args)}", c.span)
            args = tuple(_scalar_arg(a, env, "a set's bound") for a in c.args)
            if c.set.id == "nonneg":
                return Constraint(c.var.id, "box", (sp.Integer(0), sp.oo), c.span)
            return Constraint(c.var.id, c.set.id, args, c.span)
        # compare: z >= lo, z <= hi, lo <= z, hi >= z
        var_side, other, op = None, None, c.op
        if isinstance(c.left, ast.Name) and c.left.id in vars_:
            var_side, other = c.left, c.right
        elif isinstance(c.right, ast.Name) and c.right.id in vars_:
            var_side, other, op = c.right, c.left, {">=": "<=", "<=": ">="}[c.op]
        if var_side is None:
            raise DpcError("constraints are written `z >= lo`, `z <= hi` or `z in set` for a var z", c.span)
        bound = _scalar_arg(other, env, "a bound")
        lo, hi = (bound, sp.oo) if op == ">=" else (-sp.oo, bound)
        return Constraint(var_side.id, "box", (lo, hi), c.span)

    def _UpdateStmt(self, s: ast.UpdateStmt):
        if self.step is not None:
            raise DpcError("a program has one `update`; put several states in one `update { ... }`", s.span)
        if self.objective is not None:
            raise DpcError("a program is either `minimize` or `update`, not both", s.span)
        vars_ = {d.name: d for d in self.decls if d.kind == "var"}
        extra, lets, assigns, seen = {}, [], [], set()
        errors, failed = ErrorList(), set(self.failed)
        for item in s.body:
            env = self.env(("input", "param", "hyper", "let", "var"), "in the update", extra)
            env.failed = frozenset(failed)
            try:  # every line's errors are reported; a failed temporary is not reported again where used
                self._update_item(item, env, vars_, extra, lets, assigns, seen)
            except DpcError as e:
                errors.items.extend(e.diagnostics)
                if isinstance(item, ast.DeclStmt):
                    failed.add(item.name.id)
        if errors.items or len(failed) > len(self.failed):
            self.step = Step()  # an update was written: do not also report it missing
            errors.raise_if_any()
            raise FollowOn()
        # temporaries become symbols of the step; keep their shapes for the emitter
        for name, entry in extra.items():
            self.decls.append(Decl(name, "temp", entry.shape, None, s.span))
            self.names.add(name)
        self.step = Step(tuple(lets), tuple(assigns))
        self.update_spans = (("update", s.span),)

    def _update_item(self, item, env, vars_, extra, lets, assigns, seen):
        if isinstance(item, ast.DeclStmt):
            name = item.name.id
            if name in env.entries or name in self.dims:
                raise DpcError(f"'{name}' is already declared", item.name.span)
            if name in RESERVED or name.startswith("_") or name in atoms.ATOMS:
                raise DpcError(f"'{name}' cannot name a value in the generated PyTorch module "
                               "(a Python keyword or builtin, a function, or an nn.Module attribute)",
                               item.name.span, f"rename it, e.g. {name.strip('_')}_ or my_{name.strip('_')}")
            value, shape = _lower(item.value, env)
            extra[name] = _Entry(make_symbol(name, shape), shape, "temp")
            lets.append((name, value))
            return
        name = item.target.id
        if name not in vars_:
            if name in env.failed:
                raise FollowOn()
            try:  # the hint's declaration takes the shape of the value assigned
                shape = show_shape(_lower(item.expr, env)[1])
            except DpcError:
                shape = "R[n]"
            raise DpcError(f"'{name}' is not a var; only vars are updated", item.target.span,
                           f"declare it: var {name} : {shape} = 0")
        if name in seen:
            raise DpcError(f"'{name}' is updated twice", item.target.span)
        seen.add(name)
        value, shape = _lower(item.expr, env)
        if shape != vars_[name].shape:
            raise _err(f"{name} is {show_shape(vars_[name].shape)} but its update computes "
                       f"{show_shape(shape)}", item.expr)
        assigns.append((name, value))

    def _DirectiveStmt(self, s: ast.DirectiveStmt):
        self.directives.append(Directive(
            kind=s.kind,
            name=s.name.id if s.name is not None else "",
            target=s.target.id if s.target is not None else "",
            args=s.args,
            kwargs=tuple((k.id, v, k.span) for k, v in s.kwargs),
            items=tuple(tuple((w.id, w.span) for w in item) for item in s.items),
            item_options=tuple((args, tuple((k.id, v, k.span) for k, v in kwargs))
                               for args, kwargs in s.item_options),
            count=s.count,
            span=s.span,
            name_span=s.name.span if s.name is not None else s.span,
            target_span=s.target.span if s.target is not None else s.span,
        ))


def _scalar_arg(node, env, what):
    value, shape = _lower(node, env)
    if shape != ():
        raise _err(f"{what} must be a scalar, got {show_shape(shape)}", node)
    return value


def _terms(node: ast.Expr, sign: int = 1):
    """Split a sum into signed terms, in order, so errors can point at one term. Iterative: a recursive
    generator passes every term through one frame per level, quadratic in a sum of thousands of terms."""
    stack = [(sign, node)]
    while stack:
        sign, node = stack.pop()
        if isinstance(node, ast.BinOp) and node.op in "+-":
            stack.append((sign if node.op == "+" else -sign, node.right))  # popped after the left side
            stack.append((sign, node.left))
        else:
            yield sign, node


def _merge_boxes(constraints: list[Constraint]) -> list[Constraint]:
    """z >= 0 and z <= 1 on the same var become one box(0, 1)."""
    merged: list[Constraint] = []
    for c in constraints:
        prev = next((m for m in merged if m.var == c.var and m.set == "box" and c.set == "box"), None)
        if prev is None:
            merged.append(c)
            continue
        lo = c.args[0] if prev.args[0] == -sp.oo else (prev.args[0] if c.args[0] == -sp.oo
                                                         else sp.Max(prev.args[0], c.args[0]))
        hi = c.args[1] if prev.args[1] == sp.oo else (prev.args[1] if c.args[1] == sp.oo
                                                        else sp.Min(prev.args[1], c.args[1]))
        merged[merged.index(prev)] = replace(prev, args=(lo, hi))
    return merged


def lower_program(tree: ast.Program) -> tuple[Program, list[Directive]]:
    """Check and lower a parsed program; raises DpcError listing every error found."""
    return _Lowering(tree).run()
