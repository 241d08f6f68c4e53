"""The torch backend's own runtime helpers: functions a generated module defines before its class when it
uses them (declared with their source and the helpers they call; dpc.declare.ordered_helpers emits them,
dependencies first). Helpers that render an atom live with the atom's declaration (dpc.atoms)."""
from dpc.declare import helper

LAYER_COUNT = helper("_layer_count", '''
def _layer_count(steps):
    """steps as an int >= 1: a float or a bool is refused, not truncated (2.7 layers is a mistake)."""
    try:
        count = steps.__index__() if not isinstance(steps, bool) else None  # int, numpy and torch integers
    except (AttributeError, TypeError, RuntimeError):
        count = None
    if count is None or count < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return count
''')

CONVERGED = helper("_converged", '''
def _converged(tol, *pairs):
    """Per sample, whether every (new, old) pair of states changed by at most tol of the new one's norm."""
    done = None
    for new, old in pairs:
        close = torch.linalg.vector_norm(new - old, dim=-1) <= tol * torch.linalg.vector_norm(new, dim=-1)
        done = close if done is None else done & close
    return done
''')

IMPLICIT_LAYER = helper("_implicit_layer", '''
def _implicit_layer(layer, z, tol, max_iter):
    """layer(z) at a fixed point z = layer(z), whose backward is the implicit gradient: the incoming gradient
    g0 becomes the solution of g = J.T g + g0 (J = d layer / dz at the fixed point), found by iterating to
    the same tolerance for every sample (as the forward loop stops), at most max_iter times (deep equilibrium
    models, Bai, Kolter & Koltun 2019). Memory is that of one layer, whatever the number of iterations that
    found z."""
    z = z.detach()
    out = layer(z)  # carries the graph to the parameters (and inputs)
    if not out.requires_grad:
        return out
    z0 = z.clone().requires_grad_()
    f0 = layer(z0)  # for the vector-Jacobian products J.T g

    def adjoint(g0):
        g = g0
        for _ in range(max_iter):
            g_next = torch.autograd.grad(f0, z0, g, retain_graph=True)[0] + g0
            # per sample: a batch's norm would let a large gradient's convergence stop a small one's
            close = torch.linalg.vector_norm(g_next - g, dim=-1) <= tol * torch.linalg.vector_norm(g_next, dim=-1)
            g = g_next
            if bool(close.all()):
                break
        return g
    out.register_hook(adjoint)
    return out
''')

CHOLESKY = helper("_cholesky", '''
def _cholesky(A, name):
    """The Cholesky factor of A, positive definite by its derivation; a ValueError naming it where rounding
    leaves it singular (a ridge weight of 1e-30 beside a rank-deficient D)."""
    factor, info = torch.linalg.cholesky_ex(A)
    if bool((info != 0).any()):
        raise ValueError(f"{name} is not positive definite to working precision: make the ridge (or rho) larger")
    return factor
''')

LAYERS = helper("_layers", '''
def _layers(value, steps):
    """One copy of an initial value per layer (untied weights), stacked on a new first axis."""
    return value.expand(steps, *value.shape).clone()
''')

LAYER_LIST = helper("_layer_list", '''
def _layer_list(value, steps, first_read=True):
    """One copy of an initial value per layer (untied weights), each its own parameter: layer k's gradient
    is its own tensor, so backward stacks nothing. first_read=False: the first layer starts from constants
    and does not read its copy, which is frozen (requires_grad False) so that no optimizer or DDP waits
    for a gradient it never gets."""
    return nn.ParameterList(nn.Parameter(value.clone(), requires_grad=first_read or k > 0) for k in range(steps))
''')

COPIES = helper("_copies", '''
def _copies(layers):
    """A ParameterList's parameters as a tuple, layer k's at [k]: one call, where indexing the list is one
    call per layer."""
    return tuple(p for _, p in layers.named_parameters(recurse=False, remove_duplicate=False))
''')

# conjugate gradients for `derive admm(solve = cg(iters = k))` (the IR node atoms.CG)
CG = helper("_cg", '''
def _cg(A, b, x, iters):
    """iters steps of conjugate gradients for A x = b per sample (rows of b; A symmetric positive definite),
    from x (0: from zero). Where the residual is already 0 a step does not move x (no 0/0)."""
    x = b * 0 + x
    r = b - x @ A.mT
    p = r
    rs = (r * r).sum(-1, keepdim=True)
    for _ in range(iters):
        Ap = p @ A.mT
        curvature = (p * Ap).sum(-1, keepdim=True)
        alpha = torch.where(curvature > 0, rs / torch.where(curvature > 0, curvature, 1), 0)
        x = x + alpha * p
        r = r - alpha * Ap
        rs_next = (r * r).sum(-1, keepdim=True)
        p = r + torch.where(rs > 0, rs_next / torch.where(rs > 0, rs, 1), 0) * p
        rs = rs_next
    return x
''')


def namespace(*names) -> dict:
    """The named helpers and what they need, executed as a generated module would define them (for tests
    that exercise one helper on its own). Imports torch: only tests and tools call it."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from dpc import atoms  # noqa: F401 - declares the atoms' helpers
    from dpc.declare import ordered_helpers
    out = {"torch": torch, "F": F, "nn": nn}
    for used in ordered_helpers(names):
        exec(used.source, out)  # noqa: S102 - the compiler's own declared source, never user text
    return out
