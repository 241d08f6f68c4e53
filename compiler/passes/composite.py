"""What the splitting methods (derive admm, derive pdhg) need: min_z f(z) + g(K z).

f is the quadratic smooth part (its gradient is H z + b, H made of c*A.T@A with c >= 0 and c*eye),
g = a*norm1(.) is the one non-smooth term, K the linear map inside it (eye when g acts on z itself).
Both methods solve linear systems with f's Hessian, so f must be quadratic; both need the prox of g
(passes/prox.py). Not a pass itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from sympy import Identity, MatMul, MatrixSymbol

from dpc import algebra, atoms, declare
from dpc.ir import Decl, Directive, Program, StackRows, declared_shape, make_symbol
from dpc.passes.prox import Penalty
from dpc.passes.splitting import fail, hessian_requirements, hessian_terms, the_var
from dpc.printing import math

NORMS = {atoms.Norm1: "norm1"}


@dataclass(frozen=True)
class Composite:
    program: Program
    var: MatrixSymbol
    smooth: sp.Basic          # f(z)
    hessian: sp.Basic | None  # grad f(z) = hessian @ z + bias
    bias: sp.Basic | None
    K: sp.Basic               # g's argument is K @ z (a matrix), or a linear operator atom applied to z
    K_rows: str               # the dim of K @ z, as declared
    penalty: Penalty          # g(v) = penalty.weight * norm1(v)
    K_shape: tuple = ()       # the shape of K z as declared (R[2, h, w] for grad2d(u))
    operator: bool = False    # K is a declared linear operator (diff, grad2d, conv): K is then K(z) itself
    system: object = None     # f's Hessian with operators in it (passes/operator_solve.OperatorSystem), hessian None

    def hessian_system(self):
        """f's Hessian as an OperatorSystem (a dense or c*eye hessian too), None when f is linear."""
        from dpc.passes.operator_solve import OperatorSystem
        if self.system is not None:
            return self.system
        if self.hessian is None:
            return None
        c = identity_multiple(self.hessian)
        return OperatorSystem(self.var, eye=c) if c is not None else OperatorSystem(self.var, dense=self.hessian)

    def split_system(self, program: Program, directive: Directive, weight, method: str):
        """(program, system): the z-step system of a splitting whose penalty has weight `weight` (admm's rho,
        hqs's beta_t): f's Hessian plus weight*K.T K (a Gram of the operator, weight*eye or a dense product).
        f's dense part must be shown semidefinite (else a located error); the signs of its coefficients become
        requirements."""
        from dpc.passes.operator_solve import OperatorSystem
        z = self.var
        system = self.hessian_system() or OperatorSystem(z)
        if system.dense is not None:
            if not positive_semidefinite(program, system.dense)[0]:
                raise fail(program, f"derive {method}: cannot show that the {z.name}-step's system is positive "
                           f"semidefinite (H = {math(system.dense)})", directive.span)
            program = hessian_requirements(program, system.dense, directive.span,
                                           f"it keeps the {z.name}-step's system semidefinite")
        if self.operator:
            split = OperatorSystem(z, grams=((weight, self.K),))
        elif self.K.is_Identity:
            split = OperatorSystem(z, eye=weight)
        elif isinstance(self.K.shape[0], StackRows):  # a*eye(c*h) of an image stack (_linear_map): a division
            split = OperatorSystem(z, eye=weight * identity_multiple(self.K) ** 2)
        else:
            split = OperatorSystem(z, dense=weight * self.K.T @ self.K)
        return program, system.plus(split)

    def apply(self, x):
        """K x: a product, or the operator's atom on x."""
        return self.K.xreplace({self.var: x}) if self.operator else self.K @ x

    def adjoint(self, y):
        """K.T y: the operator's declared adjoint, never a dense matrix."""
        return declare.of(self.K).linear.adjoint(self.K, y) if self.operator else self.K.T @ y

    def opnorm(self):
        """||K||: its declared bound for an operator (2 for diff, sqrt(8) for grad2d), else opnorm(K)."""
        if self.operator:
            return declare.of(self.K).linear.opnorm(self.K)
        if isinstance(self.K.shape[0], StackRows):  # c*eye(c*h) of an image stack (_linear_map): |c|, no eye built
            return sp.Abs(identity_multiple(self.K))
        return sp.Integer(1) if self.K.is_Identity else atoms.OpNorm(self.K)


def split_composite(program: Program, directive: Directive) -> Composite:
    var = the_var(program, directive)
    what = f"derive {directive.name}"
    smooth, found = sp.Integer(0), []
    for term in sp.Add.make_args(sp.expand(program.objective, mul=False, multinomial=False, power_base=False)):
        if not term.has(var):
            continue
        norms = [a for a in term.atoms(atoms.ScalarAtom) if a.has(var) and isinstance(a, (atoms.Norm1, atoms.Norm0,
                                                                                           atoms.Norm2))]
        if not norms:
            smooth = smooth + term
            continue
        found.append((term, norms))
    span_of = lambda term: program.span_of_term(term) or directive.span  # noqa: E731
    if not found:
        raise fail(program, f"{what} splits f(z) + g(K z), but the objective has no non-smooth term",
                   directive.span, f"write `derive gd` in place of `{directive.label()}`")
    if len(found) > 1:
        raise fail(program, f"{what} handles one non-smooth term g(K {var.name}); "
                   f"{math(found[1][0])} is a second one", span_of(found[1][0]),
                   "keep one norm1(...) term; the others must be smooth")
    term, norms = found[0]
    atom = norms[0]
    if len(norms) > 1 or type(atom) not in NORMS:
        raise fail(program, f"{what}: no prox is known for {math(term)} (norm1 is)", span_of(term))
    weight, rest = term.as_independent(atom, as_Add=False)
    if rest != atom or weight.has(var):
        raise fail(program, f"{what} needs the non-smooth term as c*norm1(K @ {var.name}), got {math(term)}",
                   span_of(term))
    operator = _operator(program, atom.args[0], var)
    K = operator[0] if operator else _linear_map(program, directive, atom.args[0], var, span_of(term))
    for c in program.constraints:
        if c.var == var.name:
            raise fail(program, f"{what} does not handle a constraint on {var.name} yet", c.span,
                       "write it as a penalty, or use derive proxgrad")
    system = None
    try:
        grad = algebra.gradient(smooth, var)
        try:
            coeffs, bias = algebra.affine_parts(grad, [var])
        except algebra.NotAffine:  # operators in f (0.5*sqnorm(conv(k, u) - f)): its Hessian as an operator system
            from dpc.passes.operator_solve import NotOperatorQuadratic, quadratic_parts
            try:
                system, bias = quadratic_parts(grad, var)
            except NotOperatorQuadratic as e:
                raise algebra.NotAffine(e.term) from None
            coeffs = {}
    except (algebra.NotDifferentiable, algebra.NotAffine) as e:
        raise fail(program, f"{what} needs a quadratic smooth part (its {var.name}-step is a linear solve), "
                   f"but {math(e.term)} is not", _span_containing(program, e.term) or directive.span,
                   "smooth terms are sqnorm(...) of affine expressions, inner products, and sqnorm of an operator "
                   "(conv, grad2d, diff) of the var plus a constant") from None
    hessian = coeffs.get(var)
    if operator:
        return Composite(program, var, smooth, hessian, bias, K, str(K.shape[0]),
                         Penalty(NORMS[type(atom)], weight, term), K_shape=operator[1], operator=True, system=system)
    rows = K.shape[0]
    # K @ Z of a matrix var Z is a matrix: the split and dual variables have its columns too; an image stack's
    # (K = eye(c*h) for norm1(y) of y : R[c, h, w]) are declared R[c, h, w] like it (declared_shape)
    shape = (str(rows),) if var.shape[1] == 1 else (str(rows), str(var.shape[1]))
    if isinstance(rows, StackRows):
        shape = declared_shape(K @ var)
    return Composite(program, var, smooth, hessian, bias, K, str(rows),
                     Penalty(NORMS[type(atom)], weight, term), K_shape=shape, system=system)


def _operator(program, argument, var):
    """(argument, its declared shape) when the norm's argument is a declared linear operator applied to the var
    itself (grad2d(u), diff(z), conv(K, u)), else None."""
    found = declare.of(argument)
    if found is None or found.linear is None or argument.args[found.linear.operand] != var:
        return None
    if any(a.has(var) for i, a in enumerate(argument.args) if i != found.linear.operand):
        return None
    shapes = []
    for i, a in enumerate(argument.args[:getattr(found.cls, "operands", 1)]):
        # a declared name's shape, or one read off an expression's (a filter bank K + Z: its rows StackRows(k, s)
        # say k, s, s; None here crashed the shape rule: session 7 finding)
        shapes.append(program.decl(a.name).shape if hasattr(a, "name") and program.has(a.name) else declared_shape(a))
    options = {name: int(v) for (name, _), v in zip(found.options, argument.args[getattr(found.cls, "operands", 1):])}
    return argument, tuple(found.shape(shapes, **options))


def _linear_map(program, directive, argument, var, span):
    """K in argument = K @ var (no constant term)."""
    try:
        coeffs, bias = algebra.affine_parts(argument, [var])
    except algebra.NotAffine:
        coeffs, bias = {}, None
    if var not in coeffs or bias is not None:
        raise fail(program, f"derive {directive.name} needs the argument of the norm to be a linear map of "
                   f"{var.name} (K @ {var.name}), got {math(argument)}", span,
                   "move a constant offset into a new var, or write the term without it")
    K = coeffs[var]
    if isinstance(K.shape[0], StackRows) and identity_multiple(K) is not None:
        return K  # norm1(y), norm1(2*y) of an image stack y : R[c, h, w]: K = c*eye(c*h), its split R[c, h, w]
    if str(K.shape[0]) not in program.dims and not str(K.shape[0]).isdigit():
        raise fail(program, f"derive {directive.name}: the rows of {math(K)} are not a declared dim", span)
    return K


def _span_containing(program, sub):
    for term, span in program.term_spans:
        if term.has(sub) or term == sub:
            return span
    return None


def positive_semidefinite(program: Program, hessian) -> tuple[bool, bool]:
    """(psd, has_eye): H is a sum of c*A.T@A (c >= 0 at the defaults) and c*eye (c > 0); has_eye says
    whether an eye term makes it definite. (False, False) when the form is not recognised."""
    if hessian is None:
        return True, False
    kinds = [kind for _, kind, _ in hessian_terms(program, hessian)]
    if None in kinds:
        return False, False
    return True, "eye" in kinds


def identity_multiple(matrix):
    """c when matrix is c*eye (c a scalar expression), else None."""
    matrix = algebra.tidy(matrix)
    if isinstance(matrix, Identity):
        return sp.Integer(1)
    if isinstance(matrix, MatMul):
        coeff, mats = matrix.as_coeff_matrices()
        parts = [identity_multiple(m) for m in mats]  # (2*eye).T @ (2*eye) of norm1(2*y): 4
        if mats and all(p is not None for p in parts):
            return coeff * sp.Mul(*parts)
    if isinstance(matrix, sp.MatPow) and matrix.exp.is_Integer and matrix.exp > 0:  # (2*eye(c*h))**2
        base = identity_multiple(matrix.base)
        return None if base is None else base ** matrix.exp
    if isinstance(matrix, sp.Transpose):
        return identity_multiple(matrix.arg)
    if isinstance(matrix, sp.MatAdd):
        parts = [identity_multiple(t) for t in matrix.args]
        if all(p is not None for p in parts):
            return sp.Add(*parts)
    return None


def solve_or_divide(program: Program, directive: Directive, matrix, rhs, base: str, note: str):
    """matrix^-1 @ rhs: a division when matrix is c*eye, else solve(M, rhs) with M a new let (built once at
    construction when it holds no learned value)."""
    c = identity_multiple(matrix)
    if c is not None:
        return program, rhs / c, f"{math(matrix)} is a multiple of eye: a division"
    n = str(rhs.shape[0])
    name = program.fresh_name(base)
    program = program.with_decl(Decl(name, "let", (n, n), algebra.tidy(matrix), directive.span, note=note,
                                     spd=True))  # H + rho K.T K and eye + tau H: the callers checked H
    return program, atoms.Solve(make_symbol(name, (n, n)), rhs), f"{name} = {math(algebra.tidy(matrix))}"
