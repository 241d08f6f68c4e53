"""The examples built on dpc's smooth atoms, against independent references in float64:
examples/logistic.dp (softplus, FISTA) against scikit-learn's l1 logistic regression and the optimality
conditions; examples/robust_lista.dp (huber, proxgrad, learned) untrained against a numpy ISTA loop."""
import numpy as np
import pytest
import sklearn
import torch
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from conftest import EXAMPLES, build, dictionary, learned_shapes, soft, sparse_batch


def example(name, overrides=None):
    path = EXAMPLES / name
    return build(path.read_text(), path.name, overrides)


# --- l1-regularised logistic regression ---------------------------------------------------------------

def logistic_problems(seed=0, m=80, n=10, batch=3):
    """One design matrix and `batch` label vectors in {0, 1}, each drawn from its own sparse model."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n))
    w_true = rng.standard_normal((batch, n)) * (rng.random((batch, n)) < 0.5)
    y = (rng.random((batch, m)) < expit(w_true @ A.T)).astype(float)
    return A, y


def sklearn_l1_logistic(A, y, C):
    """scikit-learn's fit of  ||w||_1 + C * sum_i log(1 + exp(-s_i a_i.w)),  s = 2y - 1, no intercept.
    liblinear solves this primal to tol; 1.8 deprecated penalty='l1' for l1_ratio=1, which older versions
    ignore unless penalty='elasticnet' (they would fit the l2 model), hence the version switch."""
    major, minor = (int(part) for part in sklearn.__version__.split(".")[:2])
    l1 = {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}
    model = LogisticRegression(C=C, solver="liblinear", fit_intercept=False, tol=1e-12, max_iter=100_000, **l1)
    return model.fit(A, y).coef_[0]  # classes_ = [0, 1]: the coefficients of class 1


def optimality_gap(A, y, w, lam):
    """How far w is from satisfying 0 in grad f(w) + lam * subdifferential of ||w||_1, f the negative
    log-likelihood: g_j = -lam sign(w_j) where w_j != 0, |g_j| <= lam where w_j = 0."""
    g = A.T @ (expit(A @ w) - y)
    return np.where(w != 0, np.abs(g + lam * np.sign(w)), np.maximum(np.abs(g) - lam, 0)).max()


def test_logistic_example_reaches_sklearn_l1_logistic_regression():
    """sum(softplus(A @ w)) - y @ (A @ w) with y in {0, 1} is sklearn's loss with labels 2y - 1, so
    lam * ||w||_1 + loss has sklearn's minimiser for C = 1/lam. liblinear at tol=1e-12 agrees with the
    optimality conditions to ~1e-11 on these problems, so it is a reference at 1e-5; the conditions
    themselves (a numpy gradient, no solver) are checked on the network's answer as a second reference."""
    A, y = logistic_problems()
    C = 0.5
    lam = 1 / C
    Net = example("logistic.dp", ["unroll=3000"])
    w = Net(A=torch.tensor(A), lam=lam)(torch.tensor(y)).numpy()
    for b in range(len(y)):
        want = sklearn_l1_logistic(A, y[b], C)
        assert 0 < np.count_nonzero(want) < A.shape[1], "l1 must zero some coefficients and keep others"
        assert np.abs(w[b] - want).max() < 1e-5, b
        assert optimality_gap(A, y[b], w[b], lam) < 1e-8, b


def test_logistic_example_default_depth_is_fista_and_decreases_the_objective():
    """The compiled example as written (100 layers): its objective ends below where it starts (w = 0)
    and its last layer is closer to the sklearn optimum than its tenth."""
    A, y = logistic_problems(seed=1)
    lam = 2.0
    net = example("logistic.dp")(A=torch.tensor(A), lam=lam)
    assert net.steps == 100
    ws = net(torch.tensor(y), trace=True)
    start = net.objective(torch.tensor(y), torch.zeros(len(y), A.shape[1])).numpy()
    end = net.objective(torch.tensor(y), ws[-1]).numpy()
    assert np.all(end < start - 1)
    for b in range(len(y)):
        want = sklearn_l1_logistic(A, y[b], 1 / lam)
        assert np.abs(ws[-1][b].numpy() - want).max() < np.abs(ws[9][b].numpy() - want).max()


# --- robust LISTA: Huber data term + l1 -----------------------------------------------------------------

def huber_gradient(r, delta):
    """d/dr of sum(huber(r, delta)): r inside [-delta, delta], delta * sign(r) outside."""
    return np.where(np.abs(r) <= delta, r, delta * np.sign(r))


def huber_energy(x, D, z, lam, delta):
    r = x - z @ D.T
    data = np.where(np.abs(r) <= delta, r * r / 2, delta * (np.abs(r) - delta / 2)).sum(-1)
    return data + lam * np.abs(z).sum(-1)


def measurements_with_outliers(D, batch=6):
    """Sparse codes seen through D, with about one entry in ten hit by a gross error."""
    x, _ = sparse_batch(D, batch, seed=2)
    rng = np.random.default_rng(3)
    return x + 5 * rng.standard_normal(x.shape) * (rng.random(x.shape) < 0.1)


@pytest.mark.parametrize("lam, delta", [(0.1, 0.2), (0.03, 0.05)])
def test_robust_lista_untrained_is_ista_on_huber_l1_layer_by_layer(lam, delta):
    D = dictionary(20, 40)
    x = measurements_with_outliers(D)
    Net = example("robust_lista.dp")
    zs = Net(D=torch.tensor(D), lam=lam, delta=delta)(torch.tensor(x), trace=True)
    L = np.linalg.norm(D, 2) ** 2  # huber'' <= 1: dpc's step is 1/||D||^2
    want, z = [], np.zeros((len(x), 40))
    for _ in range(16):
        z = soft(z + huber_gradient(x - z @ D.T, delta) @ D / L, lam / L)
        want.append(z)
    assert len(zs) == 16
    for k, (got, ref) in enumerate(zip(zs, want)):
        assert np.abs(got.detach().numpy() - ref).max() < 1e-9, f"layer {k}"
    # the test can fail: the clamp is active (some residuals are beyond delta) and the codes are not zero
    assert np.any(np.abs(x - want[-1] @ D.T) > delta) and np.count_nonzero(want[-1]) > 0
    energies = [huber_energy(x, D, z, lam, delta) for z in want]  # ISTA with step 1/L never goes up
    assert all(np.all(b <= a + 1e-12) for a, b in zip(energies, energies[1:]))


def test_robust_lista_learns_a_dictionary_step_and_threshold_per_layer():
    D = dictionary(20, 40)
    x = measurements_with_outliers(D)
    net = example("robust_lista.dp")(D=torch.tensor(D), lam=0.1, delta=0.2)
    assert learned_shapes(net) == {"D": (16, 20, 40), "gamma": (16,), "theta": (16,)}
    net(torch.tensor(x)).square().sum().backward()
    for name, p in net.named_parameters():  # every layer's copy, its own parameter
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with torch.no_grad():  # layer 5's dictionary acts from layer 5 on, not before
        before = net(torch.tensor(x), trace=True)
        net.D[5] += 0.1
        after = net(torch.tensor(x), trace=True)
    assert all(torch.equal(a, b) for a, b in zip(before[:5], after[:5]))
    assert not torch.allclose(before[5], after[5])
