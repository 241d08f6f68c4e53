"""The atoms the generator calls, read from their declarations (dpc.declare.declared(role)): grouped by
where a program may call them (Palette), each group in declaration order. Nothing here names an atom but
the building blocks that keep an argument in a domain (BOUNDED_FEEDERS)."""
from __future__ import annotations

# what keeps a bounded-domain atom's argument bounded (FUZZ_DOMAINS): f(tanh(v)) or f(sigmoid(v))
BOUNDED_FEEDERS = ("tanh", "sigmoid")


def _reference(atom, *args):
    """The atom's numpy reference at args, or None where it has none or raises."""
    import numpy as np
    if atom.reference is None:
        return None
    try:
        with np.errstate(all="ignore"):
            return np.asarray(atom.reference(np, *args), dtype=float)
    except Exception:  # noqa: BLE001 - no evidence either way: the atom is left out of that group
        return None


def _takes(atom, rank: int) -> bool:
    """Its shape rule accepts a first argument of this rank (1 a vector, 2 a matrix) with its declared scalar
    arguments after it: read from the declaration's shape rule, so a matrix-only atom (nuclear, svt) is
    called on matrices and a vector-only one (norm2, topk) on vectors without a list of names here."""
    from dpc.atoms import ShapeError
    try:
        atom.shape([("m", "n")[:rank]] + [()] * len(atom.fuzz.params))
    except ShapeError:
        return False
    return True


def _bounded(atom) -> bool:
    """Its values stay in [-1, 1] however large the argument (tanh, sigmoid; not relu, abs)."""
    import numpy as np
    value = _reference(atom, np.array([-30.0, -1.0, 0.0, 1.0, 30.0]))
    return value is not None and bool(np.isfinite(value).all()) and float(np.abs(value).max()) <= 1.0


def _nonnegative(atom, rank: int = 1) -> bool:
    """A reduction whose value is >= 0 for any vector (rank 1) or matrix (rank 2): the norms; not sum."""
    import numpy as np
    probes = [np.array([-1.0, -2.0, -3.0]), np.array([1.0, -1.0, 0.5]), np.zeros(3), np.array([-0.5])]
    if rank == 2:
        probes = [np.array([[-1.0, -2.0, -3.0], [0.5, 0.0, -4.0]]), np.zeros((2, 3)), np.array([[-0.5]])]
    values = [_reference(atom, v) for v in probes]
    return all(v is not None and bool(np.isfinite(v).all()) and bool((v >= 0).all()) for v in values)


class Palette:
    """The declared atoms (dpc.declare.declared(role)) grouped by where the generator may call them, each
    group in declaration order. Read once per set of declarations (a test may declare one of its own)."""

    def __init__(self, atoms):
        every = {r: [a for a in atoms if a.fuzz.role == r] for r in ("elementwise", "smooth", "threshold", "reduction")}
        # on vectors: the atoms whose shape rule takes a vector first (all but nuclear, norm21, svt, rowsoft)
        role = {r: [a for a in group if _takes(a, 1)] for r, group in every.items()}
        real = lambda a: a.fuzz.domain == "real"  # noqa: E731
        # entrywise on vectors and matrices: f(v), the argument fed into the atom's domain
        self.elementwise = {d: [a for a in role["elementwise"] if a.fuzz.domain == d]
                            for d in ("real", "bounded", "positive")}
        self.smooth = [a for a in role["smooth"] if real(a) and not a.fuzz.params]            # square
        self.smooth_domain = [a for a in role["smooth"] if not real(a) and not a.fuzz.params]  # log(1 + v)
        self.smooth_params = [a for a in role["smooth"] if a.fuzz.params]                    # phi(v, width)
        # thresholds f(v, t...): by nonnegative scalars (soft), or to a range lo <= hi (clamp)
        self.thresholds = [a for a in role["threshold"] if "real" not in a.fuzz.params]
        self.ranges = [a for a in role["threshold"] if "real" in a.fuzz.params]
        # entrywise denominators (a / b needs every entry of b > 0): the atoms declared positive, of tanh(v) so
        # that they stay away from 0, and c + f(v), f declared nonnegative: the facts dpc's division check
        # reads (convexity.entry_sign)
        entrywise = [a for a in role["elementwise"] + role["smooth"] if not a.fuzz.params]
        self.positive_entrywise = [a for a in entrywise if a.sign == "positive"]
        self.nonnegative_entrywise = [a for a in entrywise if a.sign == "nonnegative" and a.fuzz.domain == "real"]
        # on scalars: the elementwise atoms with a scalar form
        scalar = [a for a in role["elementwise"] if a.scalar is not None]
        self.scalar_bounded = [a for a in scalar if real(a) and _bounded(a)]         # tanh, sigmoid
        self.scalar_unbounded = [a for a in scalar if real(a) and not _bounded(a)]   # relu, abs
        self.scalar_real = [a for a in scalar if real(a)]
        self.scalar_domain = {d: [a for a in scalar if a.fuzz.domain == d] for d in ("bounded", "positive")}
        # reductions; in a denominator, the continuous (convex) nonnegative ones: num + norm1(v)
        self.reductions = role["reduction"]
        self.nonnegative = [a for a in self.reductions if _nonnegative(a)]
        self.positive_part = [a for a in self.nonnegative if a.convexity == "convex"]
        # smooth terms of objectives, c*sum(phi(...)): those dpc differentiates (a derivative); a real-domain
        # one with a curvature bound, so that derive finds a step (one without needs step = ...)
        smooth_terms = [a for a in atoms if a.fuzz.role in ("elementwise", "smooth") and a.derivative is not None
                        and not a.fuzz.params]
        self.objective_smooth = [a for a in smooth_terms if real(a) and a.curvature is not None]
        # losses sum(phi(D @ z)) - x @ (D @ z), sum(phi(-x * (D @ z))): a smooth atom with a curvature bound
        self.objective_loss = [a for a in self.objective_smooth if a.fuzz.role == "smooth"]
        self.objective_bounded = [a for a in smooth_terms if a.fuzz.domain == "bounded"]
        self.objective_positive = [a for a in smooth_terms if a.fuzz.domain == "positive" and a.fuzz.role == "smooth"]
        self.objective_positive_scalar = [a for a in smooth_terms if a.fuzz.domain == "positive"
                                          and a.scalar is not None]
        # on matrices: the atoms whose shape rule takes a matrix first (Frobenius and entrywise ones, nuclear,
        # norm21, svt, rowsoft; not norm2, norm0, topk, the vector projections)
        mrole = {r: [a for a in group if _takes(a, 2)] for r, group in every.items()}
        self.matrix_elementwise = {d: [a for a in mrole["elementwise"] if a.fuzz.domain == d]
                                   for d in ("real", "bounded", "positive")}
        self.matrix_smooth = [a for a in mrole["smooth"] if real(a) and not a.fuzz.params]
        self.matrix_smooth_params = [a for a in mrole["smooth"] if a.fuzz.params]
        self.matrix_thresholds = [a for a in mrole["threshold"] if "real" not in a.fuzz.params]
        self.matrix_ranges = [a for a in mrole["threshold"] if "real" in a.fuzz.params]
        self.matrix_reductions = mrole["reduction"]
        self.matrix_positive_part = [a for a in self.matrix_reductions
                                     if a.convexity == "convex" and _nonnegative(a, 2)]
        # penalties c*f(Z) of a matrix var under derive proxgrad/fista: the reductions with a prox
        self.matrix_penalties = [a for a in self.matrix_reductions if a.prox is not None]
        # linear operators (diff, grad2d, conv): the image and signal programs (dpc.fuzz.images)
        self.operators = [a for a in atoms if a.fuzz.role == "operator" and a.linear is not None]


_PALETTES: dict = {}


def palette() -> Palette:
    """The Palette of the atoms declared now (none while the declarations are not loaded: the generator then
    writes only the language's own building blocks)."""
    from dpc import atoms  # noqa: F401 - runs the atoms' declarations
    from dpc.declare import declared
    atoms = tuple(a for a in declared() if getattr(a, "fuzz", None) is not None)
    key = tuple(map(id, atoms))
    if key not in _PALETTES:
        _PALETTES.clear()
        _PALETTES[key] = Palette(atoms)
    return _PALETTES[key]
