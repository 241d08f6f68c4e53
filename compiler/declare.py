"""Declaring an atom: one call that states every fact the compiler, its backends and its tools know about it.

The JAX-primitive pattern (../shared/STYLE.md): an atom is declared once, with every rule beside it, and
everything else (the checker, calculus, the reference evaluator, the math/LaTeX/torch printers, the lexer's
word list, hint strings, the fuzzer, the docs' atom table) reads the declaration. A declaration must state
every rule of `RULES`; `None` says "it has none" (an atom with no prox). A rule left out is a
`DeclarationError` naming the atom and the rule, raised when the declaration runs (at import), never a
`NameError` when a generated module runs.

    from dpc.declare import declare, entrywise, Fuzz
    COSH = declare("cosh", base=VectorAtom, signature="cosh(v)", doc="hyperbolic cosine, entrywise",
                   shape=entrywise, reference=lambda np, v: np.cosh(v), ...)

Runtime helpers (functions a generated module defines before its class) are declared the same way, with
their source and the helpers they call: `helper("_soft", source, needs=())`. A module emits the helpers it
uses and what they need, dependencies first (`ordered_helpers`).
"""
from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass, field
from typing import Any, Callable

import networkx as nx
import sympy as sp


# How tightly printed torch code binds, for torch rules: a template's {0:call} wraps its argument in
# parentheses unless it binds at least as tightly as a call; {0:add+} unless tighter than a sum.
PRECEDENCE = {"atom": 100, "call": 90, "pow": 60, "unary": 50, "mul": 40, "add": 30}


@dataclass(frozen=True)
class Pullback:
    """A derivative rule that is not entrywise: fn(expr, w) -> the cotangent of the atom's first argument
    for the cotangent w of its value (softmax: s * w - (s @ w) s)."""

    fn: Callable


class DeclarationError(Exception):
    """A declaration that misses a rule or states one wrongly: a contributor's mistake, named precisely."""


# --- runtime helpers ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Helper:
    """A function a generated module defines at module level: its name, its source, the helpers it calls."""

    name: str
    source: str
    needs: tuple[str, ...] = ()


HELPERS: dict[str, Helper] = {}

# names a helper's source may read besides its own locals and the helpers it needs
_MODULE_NAMES = {"torch", "F", "nn"} | set(dir(builtins))


def helper(name: str, source: str, needs: tuple[str, ...] = ()) -> Helper:
    """Declare a runtime helper. Its source must define `name` (a def or a class) and read no module-level
    name but torch, F, nn, builtins and the helpers in `needs`: a helper used without its dependency would
    be a NameError in the generated module, so it is an error here."""
    source = source.strip("\n")
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise DeclarationError(f"helper {name}: its source does not parse: {e}") from None
    defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    if defined != [name]:
        raise DeclarationError(f"helper {name}: its source must define exactly `{name}`, defines {defined}")
    free = _free_names(tree) - _MODULE_NAMES - {name}
    if free - set(needs):
        raise DeclarationError(f"helper {name}: its source reads {sorted(free - set(needs))}; declare them in "
                               f"needs=(...) (helpers), or they are undefined in the generated module")
    existing = HELPERS.get(name)
    if existing is not None and existing.source != source:
        raise DeclarationError(f"helper {name} is declared twice, with different sources")
    out = Helper(name, source, tuple(needs))
    HELPERS[name] = out
    return out


def _free_names(tree) -> set[str]:
    """Names a module-level definition reads that it does not bind itself (parameters, locals, imports)."""
    bound, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, (ast.Store, ast.Del)) else read).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return read - bound


def ordered_helpers(used) -> list[Helper]:
    """The helpers `used` names and everything they need, each after what it needs (ties: by name), so
    the same set always prints in the same order."""
    graph = nx.DiGraph()
    todo = list(used)
    while todo:
        name = todo.pop()
        if name in graph and graph.nodes[name].get("seen"):
            continue
        if name not in HELPERS:
            raise DeclarationError(f"no helper named {name} is declared")
        graph.add_node(name, seen=True)
        for dep in HELPERS[name].needs:
            graph.add_edge(dep, name)
            todo.append(dep)
    return [HELPERS[n] for n in nx.lexicographical_topological_sort(graph)]


# --- what the fuzzer needs ------------------------------------------------------------------------

FUZZ_ROLES = {
    "elementwise": "f(v) entrywise on vectors, any real argument, a value of v's shape (relu, tanh)",
    "smooth": "a smooth entrywise function with a derivative: in updates, and in objectives as "
              "c*sum(phi(A @ z + b)) (square)",
    "threshold": "a proximal non-linearity f(v, t...) with scalar thresholds after v (soft, hard, svt)",
    "reduction": "a scalar of a vector or matrix (sqnorm, norm1, sum, nuclear); one with a prox is also a penalty "
                 "of a matrix var's objective",
    "operator": "a linear operator with a `linear=` fact (diff, grad2d, conv): the generator's image and signal "
                "programs apply it to their var (after a filter param when its operand is the second argument) "
                "inside a penalty, a smooth term or a data term",
}
# Whether an atom is called on vectors, matrices or both is read from its shape rule (dpc.fuzz.palette
# probes it with R[m] and R[m, n]): nuclear, norm21, svt, rowsoft on matrices, norm2, topk on vectors.
FUZZ_DOMAINS = {
    "real": "any real argument",
    "bounded": "its argument must stay bounded (it overflows on large ones): the fuzzer feeds it tanh(...) "
               "or sigmoid(...)",
    "positive": "its argument must be positive: the fuzzer feeds it exp(tanh(...)) or 1 + square(...)",
}


@dataclass(frozen=True)
class Fuzz:
    """How the fuzzer may use an atom: its role (FUZZ_ROLES), the domain of its first argument
    (FUZZ_DOMAINS) and the kind of each further scalar argument ("positive", "nonnegative", "real")."""

    role: str
    domain: str = "real"
    params: tuple[str, ...] = ()
    weight: float = 1.0  # relative frequency among the atoms of its role

    def __post_init__(self):
        if self.role not in FUZZ_ROLES:
            raise DeclarationError(f"Fuzz role {self.role!r} is not one of {sorted(FUZZ_ROLES)}")
        if self.domain not in FUZZ_DOMAINS:
            raise DeclarationError(f"Fuzz domain {self.domain!r} is not one of {sorted(FUZZ_DOMAINS)}")


# --- atoms ----------------------------------------------------------------------------------------

# Every rule a declaration states, and what it is. None is a valid value for those marked "or None".
RULES = {
    "signature": "how a call is written, shown in errors: 'cosh(v)'",
    "doc": "one line for docs/language.md's atom table",
    "shape": "the shape rule: a list of argument shapes -> the result's shape (raise ShapeError)",
    "reference": "the numpy reference (np, *args) -> value, for dpc.reference; or None where it has no "
                 "meaning without given values (a random initial value)",
    "torch": "the torch rendering: a template such as 'torch.cosh({0})' ({0:call} wraps the argument to "
             "bind tighter than a call), a Helper (called with the printed arguments), or a function "
             "(printer, expr) -> code or (code, precedence)",
    "latex": "its LaTeX: an operator head such as r'\\cosh', or a function (printer, expr, exp) -> str, or "
             "None for \\operatorname{name}",
    "derivative": "d/dv: for an entrywise atom phi'(v, *params) as an IR value of v's shape (the chain rule "
                  "multiplies it entrywise); for a scalar of a vector its gradient; or None (not smooth)",
    "curvature": "sup |phi''| over the domain (a Lipschitz constant of phi', which bounds the step), or None "
                 "where it is unbounded or the atom is not smooth",
    "convexity": "'convex', 'concave', 'affine' or None (neither, or unknown): for convexity checks",
    "monotone": "'increasing', 'decreasing' or None: for convexity checks of compositions",
    "scalar": "what the call means on a scalar argument (a sympy function such as sp.tanh, or a builder), "
              "or None where it needs a vector",
    "sign": "the sign of its value (every entry of it) for every argument: 'positive' (> 0), 'nonnegative' "
            "(>= 0) or None (either): what dpc.convexity.entry_sign reads to accept a division by it",
    "requires": "what its arguments must be: ((argument index, 'positive' | 'nonnegative' | 'nonzero', "
                "why), ...), checked at the default and in the constructor; () for nothing",
    "prox": "the proximal-operator kind when it is a penalty c*atom(z) (passes/prox.py: 'norm1', 'norm0', "
            "'ridge'), or None",
    "fuzz": "Fuzz(role, domain, params) for the fuzzer's generator, or None where the fuzzer builds its "
            "calls itself or cannot (say why in a comment)",
}


@dataclass(frozen=True, eq=False)
class Atom:
    """One atom's declaration: its sympy class and every rule of RULES."""

    name: str
    cls: type
    build: Callable
    signature: str
    doc: str
    shape: Callable
    reference: Callable | None
    torch: Any
    latex: Any
    derivative: Callable | None
    curvature: Any
    convexity: str | None
    monotone: str | None
    scalar: Callable | None
    sign: str | None
    requires: tuple
    prox: str | None
    fuzz: Fuzz | None
    syntax: bool = True  # a program can call it by name (False: only passes build it)
    scalar_class: type | None = field(default=None)
    # keyword arguments a call may add, name -> what it is (softmax(A, axis = 1)); each an integer literal,
    # passed by name to the shape rule and the builder
    options: tuple = ()
    # a linear operator (diff, grad2d, conv): Linear(adjoint, opnorm), what derive pdhg and the calculus read
    linear: Any = None

    @property
    def rule(self):  # the checker's name for the shape rule
        return self.shape


# name -> Atom for atoms a program can call; class -> Atom for every declared atom
ATOMS: dict[str, "Atom | Macro"] = {}
BY_CLASS: dict[type, Atom] = {}
# sympy scalar functions that are an atom's scalar form (sp.tanh -> the tanh atom): printers, calculus and
# the reference evaluator treat them as that atom
BY_SCALAR_CLASS: dict[type, Atom] = {}

_CONVEXITY = (None, "convex", "concave", "affine")
_MONOTONE = (None, "increasing", "decreasing")
_RELATIONS = ("positive", "nonnegative", "nonzero")
_SIGNS = (None, "positive", "nonnegative")


@dataclass(frozen=True)
class Linear:
    """What a linear operator atom states beside the rules (declare(..., linear=Linear(...))): its exact
    adjoint, adjoint(expr, w) -> the IR of A.T @ w (matrix-free, never a dense matrix), and opnorm(expr) -> an
    upper bound on its operator norm as a scalar IR expression (from its symbol: 2 for diff, sqrt(8) for
    grad2d), which derive pdhg's default steps read. The operand is the argument at index `operand`."""

    adjoint: Callable
    opnorm: Callable
    operand: int = 0


def declare(name: str, cls: type | None = None, *, base: type | None = None, build: Callable | None = None,
            syntax: bool = True, options: dict | None = None, linear: Linear | None = None, **rules) -> Atom:
    """Declare the atom `name`: its sympy class (`cls`, or a new subclass of `base` named after it) and
    every rule of RULES as keywords. Returns the Atom; `atom.cls` builds IR nodes. `options` names the
    keyword arguments a call may add (name -> what it is): integer literals, given by name to the shape
    rule and the builder."""
    missing = [r for r in RULES if r not in rules]
    if missing:
        raise DeclarationError(f"atom '{name}' has no {missing[0]} rule: state {missing[0]} = ... "
                               f"({RULES[missing[0]]})")
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        raise DeclarationError(f"atom '{name}': {unknown[0]} is not a rule; the rules are {', '.join(RULES)}")
    if (cls is None) == (base is None):
        raise DeclarationError(f"atom '{name}': give its class, or base= to make one")
    if cls is None:
        cls = type("".join(p.capitalize() for p in name.split("_")), (base,),
                   {"__doc__": f"{rules['signature']}: {rules['doc']}", "__module__": base.__module__})
    _validate(name, rules)
    if syntax and name in ATOMS and ATOMS[name].cls is not cls:
        raise DeclarationError(f"atom '{name}' is declared twice")
    scalar = rules["scalar"]
    scalar_class = scalar if isinstance(scalar, type) and issubclass(scalar, sp.Function) else None
    atom = Atom(name=name, cls=cls, build=build or cls, syntax=syntax, scalar_class=scalar_class,
                options=tuple((options or {}).items()), linear=linear, **rules)
    # the class carries its facts too, for code that holds an IR node (type(node).reference, .derivative)
    cls.atom = atom
    cls.dp_name = name
    cls.reference = staticmethod(rules["reference"]) if rules["reference"] is not None else None
    derivative = rules["derivative"]
    cls.derivative = staticmethod(derivative) if callable(derivative) and not isinstance(derivative, Pullback) \
        else None
    cls.curvature = rules["curvature"]
    cls.requires = tuple(rules["requires"])
    if syntax:
        ATOMS[name] = atom
    BY_CLASS[cls] = atom
    if scalar_class is not None:
        BY_SCALAR_CLASS[scalar_class] = atom
    return atom


def _validate(name, rules):
    def bad(rule, why):
        raise DeclarationError(f"atom '{name}': its {rule} rule {why}")
    for rule in ("shape", "reference", "derivative", "scalar"):
        if rule == "derivative" and isinstance(rules[rule], Pullback):
            continue
        if rules[rule] is not None and not callable(rules[rule]):
            bad(rule, "must be a function or None")
    torch = rules["torch"]
    if torch is None:
        bad("torch", "is None: every atom needs a torch rendering")
    if not (isinstance(torch, (str, Helper)) or callable(torch)):
        bad("torch", "must be a template string, a Helper or a function")
    if isinstance(torch, str) and "{0" not in torch:
        bad("torch", f"template {torch!r} does not use its argument {{0}}")
    if isinstance(torch, Helper) and torch.name not in HELPERS:
        bad("torch", f"names helper {torch.name}, which is not declared")
    latex = rules["latex"]
    if latex is not None and not (isinstance(latex, str) or callable(latex)):
        bad("latex", "must be an operator head such as r'\\cosh', a function, or None")
    if rules["convexity"] not in _CONVEXITY:
        bad("convexity", f"must be one of {_CONVEXITY}")
    if rules["monotone"] not in _MONOTONE:
        bad("monotone", f"must be one of {_MONOTONE}")
    if rules["sign"] not in _SIGNS:
        bad("sign", f"must be one of {_SIGNS}")
    for req in rules["requires"]:
        if len(req) != 3 or not isinstance(req[0], int) or req[1] not in _RELATIONS:
            bad("requires", f"entry {req!r} must be (argument index, one of {_RELATIONS}, why)")
    if rules["fuzz"] is not None and not isinstance(rules["fuzz"], Fuzz):
        bad("fuzz", "must be Fuzz(...) or None")
    if rules["fuzz"] is not None and rules["fuzz"].role == "smooth" and rules["derivative"] is None:
        bad("fuzz", "says smooth, but the atom has no derivative")


@dataclass(frozen=True, eq=False)
class Macro:
    """A call that lowers to other IR and has no node of its own (sqrt(a) is a power, eye(n) an identity):
    only its shape rule and builder."""

    name: str
    signature: str
    doc: str
    shape: Callable
    build: Callable | None
    fuzz: Fuzz | None = None

    @property
    def rule(self):
        return self.shape


def declare_macro(name: str, *, signature: str, doc: str, shape: Callable, build: Callable | None) -> Macro:
    """Declare a call with no IR node of its own (its builder returns sympy's own nodes)."""
    if name in ATOMS:
        raise DeclarationError(f"atom '{name}' is declared twice")
    macro = Macro(name, signature, doc, shape, build)
    ATOMS[name] = macro
    return macro


def of(expr_or_class) -> Atom | None:
    """The declaration of an IR node's atom (or of its class), or None for sympy's own nodes."""
    cls = expr_or_class if isinstance(expr_or_class, type) else type(expr_or_class)
    for klass in cls.__mro__:
        atom = BY_CLASS.get(klass) or BY_SCALAR_CLASS.get(klass)
        if atom is not None:
            return atom
    return None


def declared(role: str | None = None) -> list[Atom]:
    """The atoms a program can call, in declaration order; with role, those the fuzzer uses in that role."""
    return [a for a in ATOMS.values() if (role is None and isinstance(a, Atom))
            or (role is not None and a.fuzz is not None and a.fuzz.role == role)]


def undeclare(name: str) -> None:
    """Remove an atom (tests that declare one of their own clean up with this)."""
    atom = ATOMS.pop(name, None)
    if atom is None:
        return
    BY_CLASS.pop(atom.cls, None)
    if atom.scalar_class is not None:
        BY_SCALAR_CLASS.pop(atom.scalar_class, None)

