"""The generated k-means layer composes with a feature network and trains end to end (issue 23)."""
import sys

import numpy as np
import pytest
import torch
from torch import nn

from conftest import EXAMPLES, build

TELL = (EXAMPLES / "kmeansnet_tell.dp").read_text()


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: these problems are tiny, and a second thread on a busy core makes every step wait."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def blobs(seed=0, n=240, k=4, d=6):
    """k well-separated Gaussian blobs in d dimensions and their labels."""
    rng = np.random.default_rng(seed)
    centres = 4.0 * rng.standard_normal((k, d))
    labels = rng.integers(0, k, n)
    return torch.as_tensor(centres[labels] + 0.5 * rng.standard_normal((n, d))), labels


def test_generated_layer_inside_a_sequential_with_an_encoder_trains():
    Layer = build(TELL, "kmeansnet_tell.dp")
    x, _ = blobs()
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    with torch.no_grad():
        start = encoder(x)[:4].clone()  # the first four codes as centroids
    model = nn.Sequential(encoder, Layer(C=start, tau=0.5))
    layer = model[1]
    assert [name for name, _ in model.named_parameters()] == ["0.0.weight", "0.0.bias", "0.2.weight", "0.2.bias",
                                                               "1.C"]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(80):
        s = model(x)  # image -> cluster probabilities through the Sequential
        assert s.shape == (240, 4) and torch.allclose(s.sum(-1), torch.ones(240))
        loss = layer.objective(model[0](x), s).mean()  # the layer's relaxed k-means objective on the codes
        optimiser.zero_grad()
        loss.backward()
        if step == 0:
            for name, p in model.named_parameters():
                assert p.grad is not None, name
                assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 1e-8, name
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    assert all(np.isfinite(losses))
    for name, p in model.named_parameters():
        assert (p.detach() - before[name]).abs().max() > 1e-4, f"{name} did not move"


@pytest.fixture
def script():
    pytest.importorskip("sklearn")
    pytest.importorskip("tqdm")
    sys.path.insert(0, str(EXAMPLES))
    try:
        import train_deep_kmeans
    finally:
        sys.path.remove(str(EXAMPLES))
    return train_deep_kmeans


@pytest.mark.parametrize("loss", ["kl", "kmeans"])
def test_the_scripts_end_to_end_training_reaches_encoder_decoder_and_centroids(script, loss):
    torch.set_default_dtype(torch.float32)  # the script works in float32 (the fixture restores the default)
    from sklearn.cluster import KMeans
    X, y = script.load_data()
    x = torch.as_tensor(X[:400])
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    ae = script.AutoEncoder(dim=8, hidden=(64, 32))
    script.pretrain(ae, x, 5, gen)
    km = KMeans(10, n_init=3, random_state=0).fit(script.codes(ae.encoder, x))
    layer = script.load_layer()(C=torch.as_tensor(km.cluster_centers_, dtype=torch.float32), tau=0.2)
    before = {name: p.detach().clone() for name, p in [*ae.named_parameters(), ("C", layer.C)]}
    model, history = script.train_end_to_end(ae, layer, x, 6, gen, lr=1e-3, loss=loss)
    assert isinstance(model, nn.Sequential) and model[0] is ae.encoder and model[1] is layer
    assert len(history) == 6 and history[-1] < history[0], history
    for name, p in [*ae.named_parameters(), ("C", layer.C)]:
        assert (p.detach() - before[name]).abs().max() > 1e-6, f"{name} did not move"
    s = model(x)
    assert s.shape == (400, 10) and torch.allclose(s.sum(-1), torch.ones(400))


def test_cluster_accuracy_is_the_best_one_to_one_matching(script):
    assert script.cluster_accuracy(np.array([0, 0, 1, 1, 2]), np.array([2, 2, 0, 0, 1])) == 1.0
    assert abs(script.cluster_accuracy(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])) - 0.75) < 1e-12
    # a merged cluster: two classes in one cluster count once
    assert abs(script.cluster_accuracy(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0])) - 0.5) < 1e-12


def test_tau_annealing_ends_at_tau_end_and_the_default_keeps_tau(script):
    torch.set_default_dtype(torch.float32)
    X, _ = script.load_data()
    x = torch.as_tensor(X[:200])
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    ae = script.AutoEncoder(dim=8, hidden=(32, 16))
    C = script.codes(ae.encoder, x)[:10]
    layer = script.load_layer()(C=torch.as_tensor(C, dtype=torch.float32), tau=0.2)
    script.train_end_to_end(ae, layer, x, 3, gen, tau_end=0.1)
    assert abs(layer.tau - 0.1) < 1e-12
    layer = script.load_layer()(C=torch.as_tensor(C, dtype=torch.float32), tau=0.2)
    script.train_end_to_end(ae, layer, x, 2, gen)
    assert layer.tau == 0.2


def test_the_merge_fix_splits_a_merged_cluster_and_merges_a_split_one(script):
    """Four groups on the unit sphere, clustered with two of them in one cluster and one cut in two:
    reseat_merged splits the big cluster along its principal direction and merges the two halves."""
    rng = np.random.default_rng(0)
    centres = np.eye(6)[:4] * 3.0
    groups = np.repeat(np.arange(4), 50)
    z = centres[groups] + 0.3 * rng.standard_normal((200, 6))
    u = z / np.linalg.norm(z, axis=1, keepdims=True)
    # the wrong clustering: groups 0 and 1 in cluster 0, group 3 cut in two (clusters 2 and 3) by its first noise axis
    cut = u[:, 4] > np.median(u[groups == 3, 4])
    wrong = np.where(groups <= 1, 0, np.where(groups == 2, 1, np.where(cut, 2, 3)))
    C = np.stack([u[wrong == j].mean(0) for j in range(4)])
    s = np.eye(4)[wrong]  # one-hot: the assignments
    new, move = script.reseat_merged(torch.as_tensor(z), torch.as_tensor(C), torch.as_tensor(s), max_share=1.5)
    assert move is not None
    big, a, b = move
    assert big == 0 and {a, b} == {2, 3}, move
    # the new centroids' nearest-centroid clustering recovers the four groups exactly (up to names)
    un = new / new.norm(dim=-1, keepdim=True)
    labels = (torch.as_tensor(u) @ un.T).argmax(-1).numpy()
    assert script.cluster_accuracy(groups, labels) == 1.0
    # an independent check of the split: numpy's principal direction of cluster 0 separates groups 0 and 1
    members = u[wrong == 0]
    direction = np.linalg.svd(members - members.mean(0))[2][0]
    side = (members - members.mean(0)) @ direction > 0
    assert script.cluster_accuracy(groups[wrong == 0], side.astype(int)) == 1.0
    # a balanced clustering is left alone
    C_right = np.stack([u[groups == j].mean(0) for j in range(4)])
    same, none = script.reseat_merged(torch.as_tensor(z), torch.as_tensor(C_right),
                                      torch.as_tensor(np.eye(4)[groups]), max_share=1.5)
    assert none is None and torch.equal(same, torch.as_tensor(C_right))


def test_the_merge_fix_inside_training_moves_in_the_checked_epochs_and_keeps_the_centroids_finite(script):
    """All images in one cluster, the other nine empty (merging two empty clusters costs nothing: that case
    once gave NaN centroids)."""
    torch.set_default_dtype(torch.float32)
    X, _ = script.load_data()
    x = torch.as_tensor(X[:300])
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    ae = script.AutoEncoder(dim=8, hidden=(32, 16))
    script.pretrain(ae, x, 3, gen)
    Z = script.codes(ae.encoder, x)
    # a start with one centroid for almost everything: the other nine are the codes of single images, pushed away
    C = np.concatenate([Z.mean(0, keepdims=True), -Z[:9]])
    layer = script.load_layer()(C=torch.as_tensor(C, dtype=torch.float32), tau=0.2)
    moves = []
    script.train_end_to_end(ae, layer, x, 4, gen, reseat=1.5, reseat_epochs=2, reseats=moves)
    assert 1 <= len(moves) <= 2 and all(m[0] < 2 for m in moves), moves
    assert torch.isfinite(layer.C).all()
    with torch.no_grad():
        sizes = np.bincount(layer(ae.encoder(x)).argmax(-1).numpy(), minlength=10)
    assert sizes.max() < 300, sizes  # the one cluster was split


def test_the_two_learning_rates_reach_their_own_parameters(script):
    """--lr (the autoencoder's) and --lr-centroids (the layer's) are separate: either at 0 freezes only its part."""
    torch.set_default_dtype(torch.float32)
    X, _ = script.load_data()
    x = torch.as_tensor(X[:200])
    for lr, lr_centroids in [(0.0, 1e-2), (1e-3, 0.0)]:
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(0)
        ae = script.AutoEncoder(dim=8, hidden=(32, 16))
        C = script.codes(ae.encoder, x)[:10]
        layer = script.load_layer()(C=torch.as_tensor(C, dtype=torch.float32), tau=0.2)
        before = {name: p.detach().clone() for name, p in ae.named_parameters()}
        script.train_end_to_end(ae, layer, x, 2, gen, lr=lr, lr_centroids=lr_centroids)
        moved = {name: (p.detach() - before[name]).abs().max().item() > 1e-7 for name, p in ae.named_parameters()}
        assert all(moved.values()) == (lr > 0) and any(moved.values()) == (lr > 0), moved
        centroids_moved = (layer.C.detach() - torch.as_tensor(C, dtype=torch.float32)).abs().max().item() > 1e-7
        assert centroids_moved == (lr_centroids > 0)
