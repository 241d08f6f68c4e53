"""Synthetic sparse coding benchmark for unrolled ISTA networks (LISTA and friends).

Reproduces the setting of Chen, Liu, Wang & Yin, "Theoretical linear convergence
of unfolded ISTA and its practical weights and thresholds" (NeurIPS 2018,
"LISTA-CPSS"):

* dictionary A (m x n, default 250 x 500), A_ij ~ N(0, 1/m), columns rescaled
  to unit norm;
* sparse codes x* with i.i.d. entries Bernoulli(p) * N(0, 1), p = 0.1;
* measurements y = A x* (+ Gaussian noise at a given SNR in dB).

Vectors are stored as rows, so a batch of codes is x (B, n) and its
measurements are y = x @ A.T (B, m), matching the generated modules, which map
y (B, m) to a code estimate z (B, n).

Contents
    make_dictionary, sample, make_problem / Problem  -- data
    soft_threshold, lipschitz, ista, fista           -- classical baselines
    nmse_db, nmse_per_layer                          -- metrics
    train_end_to_end, train_layerwise                -- training loops
    keep_layers                                      -- freeze all layers but some
    ReferenceSchedule, ReferenceTrainer              -- the LISTA-CPSS code's schedule, resumable

Only numpy and torch are required; tqdm is used for progress bars when it is
installed and plain prints are used otherwise.  Everything is deterministic
given the seeds: random numbers are always drawn on the CPU from explicit
generators, so the data do not depend on the device used for training.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

try:  # optional nicety; the loops fall back to periodic prints
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - depends on the environment
    tqdm = None

__all__ = [
    "make_dictionary", "sample", "Problem", "make_problem",
    "soft_threshold", "lipschitz", "ista", "fista",
    "nmse_db", "nmse_per_layer",
    "train_end_to_end", "train_layerwise", "keep_layers",
    "ReferenceSchedule", "ReferenceTrainer", "TFAdam",
]


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------

def make_dictionary(m=250, n=500, seed=0, dtype=torch.float32, device=None):
    """Gaussian dictionary A (m, n) with unit-norm columns.

    Drawn with numpy (in float64) so that the matrix is identical whatever
    torch version, dtype or device is used afterwards.
    """
    rng = np.random.default_rng(seed)
    A = rng.normal(0.0, 1.0 / math.sqrt(m), size=(m, n))
    A /= np.linalg.norm(A, axis=0, keepdims=True)
    return torch.as_tensor(A, dtype=dtype, device=device)


def _generator(generator=None, seed=None):
    if generator is not None:
        return generator
    g = torch.Generator()  # CPU generator: data independent of the device
    g.manual_seed(0 if seed is None else int(seed))
    return g


def sample(A, batch, p=0.1, snr_db=None, generator=None, seed=None):
    """Draw `batch` sparse codes and their measurements.

    Returns (y, x) with x (batch, n) ~ Bernoulli(p) * N(0, 1) entrywise and
    y = x @ A.T (batch, m), plus white Gaussian noise when `snr_db` is given.
    The noise is scaled per sample so that the expected
    10 log10(||A x||^2 / ||noise||^2) equals `snr_db`.

    Pass either a torch.Generator (for a stream of training batches) or a seed
    (for a fixed set).  Tensors have A's dtype and device.
    """
    g = _generator(generator, seed)
    m, n = A.shape
    support = torch.rand(batch, n, generator=g) < p
    x = (support * torch.randn(batch, n, generator=g)).to(A.dtype).to(A.device)
    y = x @ A.T
    if snr_db is not None:
        noise = torch.randn(batch, m, generator=g).to(A.dtype).to(A.device)
        # E||noise||^2 = m sigma^2  =>  sigma = ||Ax|| / sqrt(m * 10^(snr/10))
        sigma = y.norm(dim=1, keepdim=True) / math.sqrt(m * 10.0 ** (snr_db / 10.0))
        y = y + sigma * noise
    return y, x


@dataclass
class Problem:
    """A dictionary, fixed validation/test sets and a stream of training batches."""

    A: torch.Tensor
    p: float
    snr_db: float | None
    val: tuple   # (y, x)
    test: tuple  # (y, x)
    generator: torch.Generator = field(repr=False)

    @property
    def m(self):
        return self.A.shape[0]

    @property
    def n(self):
        return self.A.shape[1]

    def batch(self, size=64):
        """A fresh training batch (y, x); successive calls continue the stream."""
        return sample(self.A, size, self.p, self.snr_db, generator=self.generator)


def make_problem(m=250, n=500, p=0.1, snr_db=None, seed=0, n_val=1000, n_test=1000,
                 dtype=torch.float32, device=None):
    """Build the benchmark: dictionary, validation set, test set, training stream.

    The four random streams get independent seeds derived from `seed`
    (numpy SeedSequence), so changing e.g. the validation size never changes
    the test set.
    """
    s_dict, s_val, s_test, s_train = (
        int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(4))
    A = make_dictionary(m, n, s_dict, dtype=dtype, device=device)
    val = sample(A, n_val, p, snr_db, seed=s_val)
    test = sample(A, n_test, p, snr_db, seed=s_test)
    return Problem(A, p, snr_db, val, test, _generator(seed=s_train))


# ----------------------------------------------------------------------------
# Classical baselines
# ----------------------------------------------------------------------------

def soft_threshold(v, theta):
    """Proximal operator of theta * ||.||_1."""
    return torch.sign(v) * torch.clamp(v.abs() - theta, min=0)


def lipschitz(A):
    """L = ||A||_2^2, the Lipschitz constant of the gradient of 0.5||Az - y||^2."""
    return torch.linalg.matrix_norm(A, ord=2).item() ** 2


@torch.no_grad()
def ista(A, y, lam, T):
    """T iterations of ISTA for the LASSO 0.5||Az - y||^2 + lam ||z||_1 from z = 0.

    y is (B, m); returns the list of the T iterates, each (B, n).
    """
    L = lipschitz(A)
    z = y.new_zeros(y.shape[0], A.shape[1])
    zs = []
    for _ in range(T):
        z = soft_threshold(z - (z @ A.T - y) @ A / L, lam / L)
        zs.append(z)
    return zs


@torch.no_grad()
def fista(A, y, lam, T):
    """T iterations of FISTA (Beck & Teboulle 2009), same conventions as `ista`."""
    L = lipschitz(A)
    z = y.new_zeros(y.shape[0], A.shape[1])
    v, t = z, 1.0  # v: extrapolated point where the gradient step is taken
    zs = []
    for _ in range(T):
        z_next = soft_threshold(v - (v @ A.T - y) @ A / L, lam / L)
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        v = z_next + ((t - 1.0) / t_next) * (z_next - z)
        z, t = z_next, t_next
        zs.append(z)
    return zs


# ----------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------

def nmse_db(x_hat, x_true):
    """10 log10( sum ||x_hat - x||^2 / sum ||x||^2 ), pooled over the whole set."""
    err = (x_hat - x_true).pow(2).sum()
    ref = x_true.pow(2).sum()
    return 10.0 * math.log10(err.item() / ref.item())


@torch.no_grad()
def nmse_per_layer(net, y, x, chunk=1000):
    """NMSE (dB) of every layer's output of `net` on the set (y, x).

    Runs `net(y, trace=True)` in chunks to bound memory and pools the errors.
    """
    err = ref = None
    for i in range(0, y.shape[0], chunk):
        zs = net(y[i:i + chunk], trace=True)
        xb = x[i:i + chunk]
        e = torch.stack([(z - xb).pow(2).sum() for z in zs])
        err = e if err is None else err + e
        r = xb.pow(2).sum()
        ref = r if ref is None else ref + r
    return [10.0 * math.log10(e / ref.item()) for e in err.tolist()]


# ----------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------

def _adam(params, lr):
    # The fused kernel is noticeably faster on CPU for LISTA's large matrices
    # (millions of entries, few tensors); fall back where it is unsupported.
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


class _Progress:
    """tqdm on a terminal when installed; otherwise a line every `every` steps
    (only at steps that report stats; never when `every` is None)."""

    def __init__(self, total, desc, every=100, quiet=False):
        self.desc, self.every, self.quiet, self.i = desc, every, quiet, 0
        self.total, self.start = total, time.perf_counter()
        self.bar = None
        # tqdm only on a terminal: redirected to a file its redraws become noise
        if tqdm is not None and not quiet and sys.stderr.isatty():
            self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)

    def update(self, **stats):
        self.i += 1
        if self.bar is not None:
            self.bar.update(1)
            if stats:
                self.bar.set_postfix(stats, refresh=False)
        elif not self.quiet and self.every and stats and self.i % self.every == 0:
            text = " ".join(f"{k}={v}" for k, v in stats.items())
            elapsed = time.perf_counter() - self.start  # the ETA a tqdm bar would show
            eta = elapsed / self.i * (self.total - self.i)
            print(f"  {self.desc} step {self.i}/{self.total}: {text} ({elapsed:.0f} s, ETA {eta:.0f} s)",
                  flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class _Truncated:
    """Context manager: run only the first t layers of `net` while layer t trains.

    dpc-generated modules loop over `range(self.steps)`, so lowering `steps`
    to t skips the forward cost of layers t+1..T, which do not influence
    layer t's output anyway.  This is only a speed-up: callers index the trace
    with [t-1], which is right whether or not the module honours `steps`.
    """

    def __init__(self, net, t):
        self.net, self.t, self.saved = net, t, None

    def __enter__(self):
        steps = getattr(self.net, "steps", None)
        if isinstance(steps, int) and not isinstance(steps, bool) and steps >= self.t:
            self.saved = steps
            self.net.steps = self.t
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            self.net.steps = self.saved
        return False


def _num_layers(net, problem):
    with torch.no_grad():
        return len(net(problem.val[0][:1], trace=True))


def _stacked(net, T):
    """Trainable parameters, and the per-layer values: sequences whose [k] belongs to layer k+1
    (W[k], S[k], theta[k] for LISTA).

    A dpc-generated module names them in `per_layer_parameters`, each a stacked
    tensor or an nn.ParameterList.  For another module, a parameter counts as
    per-layer when its first dimension has size T.  (A tied parameter whose first
    dimension happens to equal T would be taken for a stack; build the network
    with a different depth if that matters.)
    """
    params = [p for p in net.parameters() if p.requires_grad]
    names = getattr(type(net), "per_layer_parameters", None)
    if names is not None:
        return params, [getattr(net, name) for name in names]
    return params, [p for p in params if p.dim() >= 1 and p.shape[0] == T]


def keep_layers(per_layer, lo, hi):
    """Zero the gradient of every layer's copy outside lo..hi-1: a stack's slices, a list's parameters."""
    for copies in per_layer:
        if isinstance(copies, torch.Tensor):
            if copies.grad is not None:
                copies.grad[:lo].zero_()
                copies.grad[hi:].zero_()
            continue
        for k, copy in enumerate(copies):
            if (k < lo or k >= hi) and copy.grad is not None:
                copy.grad.zero_()


@torch.no_grad()
def _val_nmse(net, problem, layer):
    y, x = problem.val
    return nmse_db(net(y, trace=True)[layer - 1], x)


def train_end_to_end(net, problem, steps=2000, lr=5e-4, batch=64,
                     lr_factors=(1.0, 0.2, 0.02), stage_fractions=(0.6, 0.25, 0.15),
                     deep_supervision=False, val_every=100, quiet=False):
    """Train all layers at once on the MSE of the last layer's output.

    Adam for `steps` steps on fresh batches.  With `deep_supervision` the loss
    is the mean of every layer's MSE instead, which gives early layers a
    direct training signal.  The learning rate follows the
    LISTA-CPSS decay lr -> lr*0.2 -> lr*0.02, spending `stage_fractions` of
    the steps at each value.  The parameters with the best last-layer
    validation NMSE (checked every `val_every` steps) are restored at the end.

    Returns a history list of (step, val_nmse_db).
    """
    params = [p for p in net.parameters() if p.requires_grad]
    opt = _adam(params, lr)
    bounds = np.cumsum(stage_fractions) / np.sum(stage_fractions) * steps
    T = _num_layers(net, problem)
    best = (_val_nmse(net, problem, T), copy.deepcopy(net.state_dict()))
    history = [(0, best[0])]
    # without tqdm: about five progress lines, at validation steps
    bar = _Progress(steps, "end-to-end", every=val_every * max(1, steps // val_every // 5),
                    quiet=quiet)
    for step in range(1, steps + 1):
        stage = min(int(np.searchsorted(bounds, step - 1, side="right")), len(lr_factors) - 1)
        for group in opt.param_groups:
            group["lr"] = lr * lr_factors[stage]
        y, x = problem.batch(batch)
        if deep_supervision:
            zs = net(y, trace=True)
            loss = sum(torch.nn.functional.mse_loss(z, x) for z in zs) / len(zs)
        else:
            loss = torch.nn.functional.mse_loss(net(y), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % val_every == 0 or step == steps:
            v = _val_nmse(net, problem, T)
            history.append((step, v))
            if v < best[0]:
                best = (v, copy.deepcopy(net.state_dict()))
            bar.update(loss=f"{loss.item():.2e}", val_db=f"{v:.2f}")
        else:
            bar.update()
    bar.close()
    net.load_state_dict(best[1])
    return history


def _train_stage(net, problem, layer, params, stacked, lo, lr, batch, max_iters,
                 patience, check_every, bar):
    """One stage of the layer-wise schedule: fit layer `layer`'s output.

    Only copies lo..layer-1 of the per-layer values are updated: the gradient
    of the other copies is zeroed after backward.  With a fresh Adam whose
    moments start at zero, a copy whose gradient is always zero gets exactly
    zero updates, so masking gradients is equivalent to freezing those copies.
    Copies >= layer have zero gradient anyway (later layers do not influence
    layer `layer`'s output); tied parameters are always trained.

    Stops after `max_iters` steps or when the validation NMSE has not improved
    for `patience` consecutive checks; restores the best parameters seen.
    """
    opt = _adam(params, lr)
    best = (_val_nmse(net, problem, layer), copy.deepcopy(net.state_dict()))
    stale = 0
    for it in range(1, max_iters + 1):
        y, x = problem.batch(batch)
        loss = torch.nn.functional.mse_loss(net(y, trace=True)[layer - 1], x)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        keep_layers(stacked, lo, layer)
        opt.step()
        if it % check_every == 0:
            v = _val_nmse(net, problem, layer)
            if v < best[0] - 1e-3:
                best, stale = (v, copy.deepcopy(net.state_dict())), 0
            else:
                stale += 1
            bar.update(layer=layer, lr=f"{lr:.1e}", val_db=f"{best[0]:.2f}")
            if stale >= patience:
                break
        else:
            bar.update()
    net.load_state_dict(best[1])
    return best[0], it


def train_layerwise(net, problem, lr=5e-4, batch=64, max_iters=2000, patience=5,
                    check_every=50, lr_factors=(1.0, 0.2, 0.02), layers=None,
                    quiet=False):
    """Layer-wise training as in LISTA-CPSS, simplified and time-bounded.

    For t = 1..T: train layer t's parameters alone at `lr`, then layers 1..t
    together at lr*lr_factors[1], lr*lr_factors[2], ...; every stage minimises
    the MSE between `net(y, trace=True)[t-1]` and x*.  Works for any module
    whose per-layer parameters are listed in `per_layer_parameters` (stacks or
    ParameterLists) or stacked along a leading dimension of size T; parameters
    without it (tied across layers) are trained in every stage.

    `layers` defaults to the depth of `net`'s trace.  Returns a history list of
    (layer, stage, iterations, val_nmse_db).
    """
    T = _num_layers(net, problem)
    layers = T if layers is None else min(layers, T)
    params, stacked = _stacked(net, T)
    history = []
    # without tqdm the per-layer lines below are the progress report
    bar = _Progress(layers * len(lr_factors) * max_iters, "layer-wise", every=None, quiet=quiet)
    start = time.perf_counter()
    for t in range(1, layers + 1):
        with _Truncated(net, t):
            for stage, factor in enumerate(lr_factors):
                lo = t - 1 if stage == 0 else 0  # stage 0: the new layer alone
                v, iters = _train_stage(net, problem, t, params, stacked, lo, lr * factor,
                                        batch, max_iters, patience, check_every, bar)
                history.append((t, stage, iters, v))
        if bar.bar is None and not quiet:
            print(f"  layer {t:2d}: val NMSE {v:7.2f} dB  "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    bar.close()
    return history


# ----------------------------------------------------------------------------
# The reference schedule (VITA-Group/LISTA-CPSS, utils/train.py and config.py)
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ReferenceSchedule:
    """The layer-wise schedule of the LISTA-CPSS / ALISTA code, with its defaults (`config.py`).

    For t = 1..T: stage 0 trains layer t's own values alone at `lr`; stages 1, 2 train layers 1..t
    at lr * lr_decay[0], lr * lr_decay[1], every gradient multiplied by its layer's learning-rate
    multiplier (`get_train_op`); after layer t's stages, the multiplier of every value trained so far
    is multiplied by `decay_rate`, so in layer t's later stages layer k's gradient is scaled by
    decay_rate ** (t - k). Values tied across layers belong to layer 1, as the reference's shared
    variables do (they are created in its first layer).

    Every stage takes Adam steps (TensorFlow 1's form, `TFAdam`) on tf.nn.l2_loss = 0.5 * sum of
    squares of layer t's output error, fresh batches of `batch`; validation NMSE on a fixed set every
    `val_step` iterations; every `age_every` iterations (100 validations there) the stage ends if the
    best validation NMSE is more than `better_wait` iterations old; at most `maxit` + 1 iterations.
    The parameters at the end of a stage are kept (the reference restores no best).
    Thresholds start at lam / (threshold_scale * L): build the networks with lam / threshold_scale.
    """

    lr: float = 5e-4
    lr_decay: tuple = (0.2, 0.02)
    decay_rate: float = 0.3
    batch: int = 64
    val_step: int = 10
    age_every: int = 1000
    better_wait: int = 4000
    maxit: int = 200_000
    threshold_scale: float = 1.001

    def stages(self, layers):
        """[(t, stage, lr)] in training order: 1 + len(lr_decay) stages a layer."""
        return [(t, s, self.lr if s == 0 else self.lr * self.lr_decay[s - 1])
                for t in range(1, layers + 1) for s in range(1 + len(self.lr_decay))]

    def multiplier(self, t, stage, k):
        """Gradient multiplier of layer k's values (1-based; tied values: k = 1) in stage `stage` of
        layer t; 0 where the stage does not train them."""
        if stage == 0:
            return 1.0 if k == t else 0.0
        return self.decay_rate ** (t - k) if k <= t else 0.0

    def stage_ends(self, i, history):
        """The reference's test after iteration i (0-based) with validation NMSEs `history` so far."""
        if i % self.age_every or not history:
            return False
        best = min(range(len(history)), key=history.__getitem__)  # the first best, as np.argmin
        return (len(history) - best - 1) * self.val_step > self.better_wait


class TFAdam:
    """Adam as TensorFlow 1's AdamOptimizer computes it, the reference code's optimizer:
    lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t), p -= lr_t * m / (sqrt(v) + eps), eps outside the bias
    correction (torch.optim.Adam adds eps to sqrt(v / (1 - b2^t))). Adam is invariant to the scale of
    a gradient except through eps, so the reference's gradient multipliers act through it: a layer's
    steps shrink once decay_rate ** (t - k) times its gradient nears eps."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.betas, self.eps = list(params), lr, betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self, grads):
        b1, b2 = self.betas
        self.t += 1
        lr_t = self.lr * math.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, v.sqrt().add_(self.eps), value=-lr_t)

    def state_dict(self):
        return {"t": self.t, "m": [x.clone() for x in self.m], "v": [x.clone() for x in self.v]}

    def load_state_dict(self, state):
        self.t = state["t"]
        for dst, src in zip(self.m + self.v, state["m"] + state["v"]):
            dst.copy_(src)


def _layer_units(net):
    """(parameter, layer) for every trained parameter: layer k (1-based) for a copy in a ParameterList
    of `per_layer_parameters`, "stack" for a stacked per-layer tensor (layer k at [k-1]), 1 for a value
    tied across layers."""
    per_layer = set(getattr(type(net), "per_layer_parameters", ()))
    units = []
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        head, _, rest = name.partition(".")
        if head in per_layer and rest.isdigit():
            units.append((p, int(rest) + 1))
        elif head in per_layer:
            units.append((p, "stack"))
        else:
            units.append((p, 1))
    return units


def _active_rows(scale):
    """For a stacked tensor's multiplier (a tensor over its first axis): 1 + the last row with a non-zero
    multiplier (the rows Adam must update); None for a plain float multiplier."""
    if not isinstance(scale, torch.Tensor):
        return None
    nonzero = scale.reshape(scale.shape[0], -1)[:, 0].nonzero()
    return int(nonzero.max()) + 1


class ReferenceTrainer:
    """Trains `net` with a ReferenceSchedule on `problem`, resumably: `state_dict()` holds the
    network, the stage reached, its iteration, validation history and Adam moments, the training
    stream's generator and the elapsed time; `load_state_dict` continues where it stopped, with
    the same numbers as a run that never stopped.

    `run(on_check, on_layer, should_save, save, max_seconds, stop)`: on_check(info) at every age
    check (every `age_every` iterations) and at each stage's end; on_layer(t) after layer t's stages;
    save() when should_save() says so (at age checks) and at each stage's end; stops, saves and
    returns False once `max_seconds` of training in all have passed (checked at age checks) or, after
    any iteration, when stop() is true (e.g. on SIGTERM); returns True when the schedule is done.
    """

    def __init__(self, net, problem, schedule: ReferenceSchedule, layers=None):
        self.net, self.problem, self.schedule = net, problem, schedule
        self.layers = layers or net.steps
        self.units = _layer_units(net)
        self.plan = schedule.stages(self.layers)
        self.position = 0          # index into plan of the stage in progress
        self.i = 0                 # its next iteration
        self.history = []          # its validation NMSEs (linear, pooled)
        self.optimizer_state = None
        self.iterations = 0        # over all stages
        self.seconds = 0.0
        self.done = False
        self._opt = None           # the stage's optimizer while it runs

    # -- the pieces the test checks -------------------------------------------------
    def multipliers(self, t, stage):
        """[(parameter, multiplier)] of the stage, multiplier a float or (for a stack) a tensor over
        its first axis; parameters the stage does not train are left out."""
        out = []
        for p, layer in self.units:
            if layer == "stack":
                scale = torch.tensor([self.schedule.multiplier(t, stage, k + 1) for k in range(p.shape[0])],
                                     dtype=p.dtype, device=p.device)
                if scale.any():
                    out.append((p, scale.view(-1, *([1] * (p.dim() - 1)))))
            else:
                scale = self.schedule.multiplier(t, stage, layer)
                if scale:
                    out.append((p, scale))
        return out

    def loss(self, y, x, t):
        z = self.net(y, steps=t)
        return 0.5 * (z - x).pow(2).sum()  # tf.nn.l2_loss

    @torch.no_grad()
    def val_nmse(self, t):
        y, x = self.problem.val
        z = self.net(y, steps=t)
        return ((z - x).pow(2).sum() / x.pow(2).sum()).item()

    # -- resumption --------------------------------------------------------------------
    def state_dict(self):
        optimizer = self._opt.state_dict() if self._opt is not None else self.optimizer_state
        return {"net": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
                "position": self.position, "i": self.i, "history": list(self.history),
                "optimizer": optimizer, "iterations": self.iterations, "seconds": self.seconds,
                "generator": self.problem.generator.get_state(), "done": self.done,
                "schedule": dict(self.schedule.__dict__)}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["net"])
        self.position, self.i, self.history = state["position"], state["i"], list(state["history"])
        self.optimizer_state, self.iterations = state["optimizer"], state["iterations"]
        self.seconds, self.done = state["seconds"], state["done"]
        self.problem.generator.set_state(state["generator"])

    # -- training --------------------------------------------------------------------------
    def run(self, on_check=None, on_layer=None, should_save=None, save=None, max_seconds=None, stop=None):
        sched = self.schedule
        while self.position < len(self.plan):
            t, stage, lr = self.plan[self.position]
            scaled = self.multipliers(t, stage)
            if not scaled:  # e.g. stage 0 of a later layer of an all-tied network: nothing to train
                self._next_stage(t, stage, on_check, on_layer, save)
                continue
            # A stacked per-layer tensor (layer k at row k-1) is trained through the view of its rows
            # 1..t: the later rows' gradients are 0 and Adam's moments start at 0 each stage, so they would
            # not move anyway, and Adam over all `layers` rows costs up to 16 times as much per step.
            rows = [_active_rows(s) for _, s in scaled]
            opt = self._opt = TFAdam([p if r is None else p[:r] for (p, _), r in zip(scaled, rows)], lr)
            if self.optimizer_state is not None:
                opt.load_state_dict(self.optimizer_state)
            start = time.perf_counter() - self.seconds
            with _Truncated(self.net, t):
                while self.i <= sched.maxit:
                    if stop is not None and stop():
                        self.seconds = time.perf_counter() - start
                        if save is not None:
                            save()
                        return False
                    y, x = self.problem.batch(sched.batch)
                    loss = self.loss(y, x, t)
                    grads = torch.autograd.grad(loss, [p for p, _ in scaled], allow_unused=True)
                    opt.step([torch.zeros_like(p if r is None else p[:r]) if g is None else
                              (g * s if r is None else g[:r] * s[:r]) for (p, s), g, r in zip(scaled, grads, rows)])
                    self.iterations += 1
                    i, self.i = self.i, self.i + 1
                    if i % sched.val_step == 0:
                        self.history.append(self.val_nmse(t))
                    if i % sched.age_every == 0:
                        self.seconds = time.perf_counter() - start
                        self.optimizer_state = opt.state_dict()
                        ends = sched.stage_ends(i, self.history)
                        if on_check is not None:
                            on_check(self._info(t, stage, lr, "check"))
                        if ends:
                            break
                        if max_seconds is not None and self.seconds >= max_seconds:
                            if save is not None:
                                save()
                            return False
                        if should_save is not None and save is not None and should_save():
                            save()
            self.seconds = time.perf_counter() - start
            self._opt = None
            self._next_stage(t, stage, on_check, on_layer, save)
        self.done = True
        if save is not None:
            save()
        return True

    def _info(self, t, stage, lr, event):
        best = min(self.history) if self.history else float("nan")
        to_db = lambda v: 10 * math.log10(v) if v > 0 else float("-inf")  # noqa: E731
        return dict(event=event, layer=t, stage=stage, lr=lr, stage_iter=self.i, iterations=self.iterations,
                    seconds=round(self.seconds, 1),
                    val_db=to_db(self.history[-1]) if self.history else float("nan"), best_val_db=to_db(best))

    def _next_stage(self, t, stage, on_check, on_layer, save):
        if on_check is not None and self.history:
            on_check(self._info(t, stage, self.plan[self.position][2], "stage_end"))
        self.position += 1
        self.i, self.history, self.optimizer_state = 0, [], None
        if stage == len(self.schedule.lr_decay) and on_layer is not None:
            on_layer(t)
        if save is not None:
            save()
