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

UNTIL_STEP = helper("_until_step", '''
def _until_step(states, new, watched, tol, done, iterations, residual):
    """One iteration of `unroll until` for the batch: each sample not yet done takes its new states (a done
    sample keeps them all, scalar states included), counts the iteration and records its residual, the
    largest relative change ||new - old|| / ||new|| of the first `watched` states; it is done once every one
    of them changed by at most tol of its new norm. The test and the residual carry no gradient (detached):
    at a sample whose state is 0, diff / size is 0/0 in the branch torch.where drops, whose backward
    AOTAutograd (training under torch.compile) computes for every output, info's residual included: NaN."""
    converged, change = None, None
    for old_s, new_s in zip(states[:watched], new[:watched]):
        old_s, new_s = old_s.detach(), new_s.detach()
        diff = torch.linalg.vector_norm((new_s - old_s).flatten(1), dim=-1)
        size = torch.linalg.vector_norm(new_s.flatten(1), dim=-1)
        close = diff <= tol * size
        relative = torch.where(diff == 0, 0, diff / size)  # 0 where nothing moved, even at 0
        converged = close if converged is None else converged & close
        change = relative if change is None else torch.maximum(change, relative)
    states = tuple(torch.where(done.view((-1,) + (1,) * (s.dim() - 1)), s, n) for s, n in zip(states, new))
    iterations = iterations + (~done).to(iterations.dtype)
    residual = torch.where(done, residual, change.to(residual.dtype))
    return states, done | converged, iterations, residual
''')

UNTIL = helper("_until", '''
def _until(update, states, watched, tol, steps, history=False):
    """`unroll until`: apply update(*states) -> new states until, in every sample, the first `watched` states
    change by at most tol of their norm (_until_step), or `steps` times. Returns (states, info, history):
    info = {"iterations", "residual", "converged"}, one entry per sample; history, when asked for, the states
    after every iteration run. Eagerly a Python loop that stops when every sample is done (one bool() per
    iteration); traced by torch.export, or by torch.compile without grad (no history), one while_loop: the
    same iterations without a host sync or a data-dependent guard."""
    batch, like = states[0].shape[0], states[0]
    done = torch.zeros(batch, dtype=torch.bool, device=like.device)
    iterations = torch.zeros(batch, dtype=torch.int64, device=like.device)
    residual = torch.full((batch,), float("inf"), dtype=like.dtype, device=like.device)
    kept = []
    # one while_loop where torch.compile or torch.export trace the module for inference (no graph to keep
    # through the loop); training under torch.compile runs the Python loop below (a graph break at bool())
    if torch.compiler.is_compiling() and not history and (torch.compiler.is_exporting() or not torch.is_grad_enabled()):
        from torch._higher_order_ops import while_loop

        def more(k, done, iterations, residual, *states):
            return (k < steps) & ~done.all()

        def body(k, done, iterations, residual, *states):
            states, done, iterations, residual = _until_step(states, update(*states), watched, tol, done,
                                                             iterations, residual)
            return (k + 1, done, iterations, residual, *states)
        k = torch.zeros((), dtype=torch.int64, device=like.device)
        _, done, iterations, residual, *states = while_loop(more, body, (k, done, iterations, residual, *states))
        states = tuple(states)
    else:
        for _ in range(steps):
            states, done, iterations, residual = _until_step(states, update(*states), watched, tol, done,
                                                             iterations, residual)
            if history:
                kept.append(states)
            if bool(done.all()):
                break
    return states, {"iterations": iterations, "residual": residual, "converged": done}, kept
''', needs=("_until_step",))

UNCONVERGED = helper("_warn_unconverged", '''
def _warn_unconverged(module, info, steps, tol, what="unroll until"):
    """Warn, once per module, that some samples stopped at `steps` iterations without meeting tol (eagerly;
    the counts are in info either way)."""
    missed = ~info["converged"]
    if torch.compiler.is_compiling() or module.__dict__.get("_warned_" + what) or not bool(missed.any()):
        return
    import warnings
    module.__dict__["_warned_" + what] = True
    worst = float(info["residual"][missed].max())
    warnings.warn(f"{type(module).__name__}: {int(missed.sum())} of {missed.numel()} samples stopped at "
                  f"{steps} iterations of {what} without meeting tol = {tol:g} (largest relative change "
                  f"{worst:.3g}); raise max (steps=) or tol, or check that the update contracts (warned once "
                  "per module)", RuntimeWarning, stacklevel=2)
''')

CAUTION = helper("_caution", '''
def _caution(module, attribute, message):
    """Warn, once per module (module.<attribute>), that a value breaks a condition the derivation wants but
    does not need (proxgrad's step between 1/L and 2/L)."""
    if getattr(module, attribute, False):
        return
    import warnings
    setattr(module, attribute, True)
    warnings.warn(f"{type(module).__name__}: {message}", RuntimeWarning, stacklevel=3)
''')

IMPLICIT_LAYER = helper("_implicit_layer", '''
def _implicit_layer(layer, z, tol, max_iter, info=None, memory=6):
    """layer(z) at a fixed point z = layer(z), whose backward is the implicit gradient: the incoming gradient
    g0 becomes the solution of g = J.T g + g0 (J = d layer / dz at the fixed point; deep equilibrium models,
    Bai, Kolter & Koltun 2019). The adjoint equation is solved by Anderson acceleration (Walker & Ni 2011)
    with the last `memory` iterates, each sample on its own until ||g_new - g|| <= tol ||g_new|| (or
    max_iter iterations); where a sample does not converge, a warning says so. info (the forward's) gets
    "adjoint_iterations", "adjoint_residual", "adjoint_converged" per sample. Memory is that of one layer,
    whatever the number of iterations that found z."""
    def apply(v):  # the update of one state, written to return a tuple
        new = layer(v)
        return new[0] if isinstance(new, tuple) else new
    z = z.detach()
    out = apply(z)  # carries the graph to the parameters (and inputs)
    if not out.requires_grad:
        return out
    z0 = z.clone().requires_grad_()
    f0 = apply(z0)  # for the vector-Jacobian products J.T g

    def adjoint(g0):
        shape, batch = g0.shape, g0.shape[0]
        flat = g0.reshape(batch, -1)

        def step(g):  # F(g) = J.T g + g0, per sample
            return torch.autograd.grad(f0, z0, g.reshape(shape), retain_graph=True)[0].reshape(batch, -1) + flat
        g, done = flat, torch.zeros(batch, dtype=torch.bool, device=flat.device)
        iterations = torch.zeros(batch, dtype=torch.int64, device=flat.device)
        residual = torch.full((batch,), float("inf"), dtype=flat.dtype, device=flat.device)
        values, residuals = [], []  # F(g_i) and F(g_i) - g_i of the last `memory` iterates
        for _ in range(max_iter):
            value = step(g)
            change = value - g
            diff, size = torch.linalg.vector_norm(change, dim=-1), torch.linalg.vector_norm(value, dim=-1)
            converged = diff <= tol * size
            iterations = iterations + (~done).to(iterations.dtype)
            residual = torch.where(done, residual, torch.where(diff == 0, 0, diff / size))
            values, residuals = (values + [value])[-memory:], (residuals + [change])[-memory:]
            R = torch.stack(residuals, 1)  # (batch, m, n): the mix of F(g_i) whose residual is least
            gram = R @ R.mT
            scale = 1e-12 * gram.diagonal(dim1=-2, dim2=-1).amax(-1) + torch.finfo(gram.dtype).tiny
            gram = gram + scale[:, None, None] * torch.eye(len(residuals), dtype=gram.dtype, device=gram.device)
            weights = torch.linalg.solve(gram, torch.ones_like(gram[..., :1]))
            weights = weights / weights.sum(1, keepdim=True)
            mixed = (weights * torch.stack(values, 1)).sum(1)
            mixed = torch.where(torch.isfinite(mixed).all(-1, keepdim=True), mixed, value)
            # a sample that converged keeps the F(g) that met tol; the others take the Anderson mix
            g = torch.where(done[:, None], g, torch.where(converged[:, None], value, mixed))
            done = done | converged
            if bool(done.all()):
                break
        if info is not None:
            info.update(adjoint_iterations=iterations, adjoint_residual=residual, adjoint_converged=done)
        if not bool(done.all()):
            import warnings
            warnings.warn(f"backward implicit: the adjoint equation of {int((~done).sum())} of {batch} samples did "
                          f"not converge in {max_iter} iterations (largest relative change "
                          f"{float(residual[~done].max()):.3g}); the gradient is inexact there", RuntimeWarning)
        return g.reshape(shape)
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

MODULE_REPR = helper("_module_repr", '''
def _module_repr(module):
    """nn.Module's repr, with each per-layer nn.ParameterList on one line (how many, their shape and dtype;
    scalars: their range) instead of a line per layer."""
    lines = [module.extra_repr()] if module.extra_repr() else []
    for name, layers in module.named_children():
        first = layers[0]
        shape = "scalar" if first.dim() == 0 else "x".join(str(size) for size in first.shape)
        text = f"{len(layers)} layers x {shape}, {str(first.dtype).replace('torch.', '')}"
        if first.dim() == 0:
            values = torch.stack([p.detach() for p in layers])
            text += f", from {float(values.min()):.4g} to {float(values.max()):.4g}"
        lines.append(f"({name}): {type(layers).__name__}({text})")
    return f"{type(module).__name__}(" + "".join(f"\\n  {line}" for line in lines) + ("\\n)" if lines else ")")
''')

POSITIVE = helper("_positive", '''
def _positive(raw):
    """log(1 + exp(raw)), > 0 for every raw (computed without overflow): how a learned value that must be
    > 0 (or >= 0) is trained. torch's function is linear only above 40, where log(1 + exp(-raw)) < 5e-18 is below
    float64's rounding; one op forward and one backward (logaddexp with a zero tensor is five)."""
    return torch.nn.functional.softplus(raw, threshold=40)
''')

POSITIVE_INVERSE = helper("_positive_inverse", '''
def _positive_inverse(value):
    """The raw parameter r with log(1 + exp(r)) = value: value + log(1 - exp(-value)), so the untrained network
    is unchanged (to rounding). A value of 0 (allowed for >= 0) starts at the smallest normal number's, whose
    image is 0 to float precision."""
    value = torch.as_tensor(value).clamp_min(torch.finfo(torch.as_tensor(value).dtype).tiny)
    return value + torch.log(-torch.expm1(-value))
''')

LEARNED = helper("_learned", '''
def _learned(value, like, constrain):
    """The raw parameter's start for a value kept > 0 or >= 0 (log(1 + exp(raw)) = value), in like's dtype and
    device; the value itself when constrain is False."""
    value = torch.as_tensor(float(value), dtype=like.dtype, device=like.device)
    return _positive_inverse(value) if constrain else value
''', needs=("_positive_inverse",))

SUMMARY = helper("_summary", '''
def _summary(value):
    """A learned value for print(net): a number, or every layer's as their range."""
    if isinstance(value, torch.Tensor):
        return f"{float(value):.4g}"
    values = torch.stack([v.detach() for v in value])
    return f"{len(values)} layers, from {float(values.min()):.4g} to {float(values.max()):.4g}"
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


# conjugate gradients on a linear map applied matrix-free (the IR node atoms.OperatorCG: a u-step with operators)
CG_OP = helper("_cg_op", '''
def _cg_op(A, b, x, iters, axes):
    """iters steps of conjugate gradients for A(x) = b per sample, A a symmetric positive (semi)definite linear
    map given as a function (operators and their adjoints, never a matrix), b (batch, ...) with `axes`
    per-sample axes, from x (0: from zero). Once a sample's residual is at rounding level of its b
    (|r| <= 64 eps |b|) its steps stop moving x (no 0/0, no division of rounding by rounding)."""
    dims = tuple(range(-axes, 0))
    x = b * 0 + x
    r = b - A(x)
    p = r
    rs = (r * r).sum(dims, keepdim=True)
    # converged: the residual at rounding level of b. Stepping on from there divides rounding by rounding: on a
    # singular system (zero-mean filters and grad2d both miss constants) that direction's curvature is positive
    # by rounding only, and x blew up to 1e15 (fuzz finding, docs/trust.md)
    floor = (b * b).sum(dims, keepdim=True) * (64 * torch.finfo(b.dtype).eps) ** 2
    for _ in range(iters):
        Ap = A(p)
        curvature = (p * Ap).sum(dims, keepdim=True)
        step = (curvature > 0) & (rs > floor)
        alpha = torch.where(step, rs / torch.where(step, curvature, 1), 0)
        x = x + alpha * p
        r = r - alpha * Ap
        rs_next = (r * r).sum(dims, keepdim=True)
        p = r + torch.where(rs > 0, rs_next / torch.where(rs > 0, rs, 1), 0) * p
        rs = rs_next
    return x
''')

OPNORM_ESTIMATE = helper("_opnorm_estimate", '''
def _opnorm_estimate(A, cache, key, iters=2):
    """opnorm(A) for the forward check of a requirement on a learned matrix: exact (an SVD) on the first call
    and whenever A's shape, dtype or device changed; after that `iters` power iterations on A.T @ A from the
    last right singular vector, kept in cache[key] (a training step moves A a little, so the warm start is
    close). Never above opnorm(A): a bound it breaks, opnorm(A) breaks too."""
    A = A.detach()
    v = cache.get(key)
    if v is None or v.shape[0] != A.shape[-1] or v.dtype != A.dtype or v.device != A.device:
        _, s, vh = torch.linalg.svd(A, full_matrices=False)
        cache[key] = vh[0]
        return s[0]
    for _ in range(iters):
        w = A.mT @ (A @ v)
        v = w / torch.linalg.vector_norm(w).clamp_min(torch.finfo(A.dtype).tiny)
    cache[key] = v
    return torch.linalg.vector_norm(A @ v)
''')

LEARNED_STAMP = helper("_learned_stamp", '''
def _learned_stamp(*tensors):
    """What identifies the learned tensors' current values without reading them: (data_ptr, _version) of each
    (an optimizer step, load_state_dict or .to() changes it, a forward does not). Host-side only."""
    return tuple((t.data_ptr(), t._version) for t in tensors)
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

DCT_FILTERS = helper("_dct_filters", '''
def _dct_filters(k, s0, s1):
    """`param K : R[k, s0, s1] = dct`: the first k elements of the orthonormal 2-D DCT-II basis of s0 x s1
    patches without its constant element, the lowest frequencies (i + j) first, then the lower i: every filter
    has zero mean and unit norm (TNRD's initialisation). In the default dtype, on the cpu."""
    if not 1 <= k <= s0 * s1 - 1:
        raise ValueError(f"the DCT basis of {s0} x {s1} filters has {s0 * s1 - 1} zero-mean elements, not {k}")
    def basis(n):  # rows: the 1-D DCT-II basis vectors, orthonormal
        i = torch.arange(n, dtype=torch.float64)
        c = torch.cos(torch.pi * (2 * i[None, :] + 1) * i[:, None] / (2 * n)) * (2.0 / n) ** 0.5
        c[0] = c[0] / 2 ** 0.5
        return c
    c0, c1 = basis(s0), basis(s1)
    order = sorted(((i, j) for i in range(s0) for j in range(s1) if (i, j) != (0, 0)), key=lambda ij: (ij[0] + ij[1], ij[0]))
    return torch.stack([torch.outer(c0[i], c1[j]) for i, j in order[:k]]).to(torch.get_default_dtype())
''')

RANDOM_FILTERS = helper("_random_filters", '''
def _random_filters(shape):
    """`param K : R[k, s0, s1] = random` (or R[s0, s1]): filters drawn from torch's generator (torch.manual_seed
    makes them reproducible), each minus its mean and over its norm: zero mean, unit norm. In the default
    dtype, on the cpu."""
    K = torch.randn(shape, dtype=torch.float64)
    K = K - K.mean(dim=(-2, -1), keepdim=True)
    return (K / torch.linalg.vector_norm(K, dim=(-2, -1), keepdim=True)).to(torch.get_default_dtype())
''')
