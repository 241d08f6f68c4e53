"""Deep clustering with the compiled k-means layer: an autoencoder and kmeansnet_tell.dp, trained end to end.

The feature network is a small denoising MLP autoencoder written below in plain PyTorch
(64 -> 512 -> 256 -> 16 -> 256 -> 512 -> 64); its code z lives on the unit sphere: the
decoder reads normalize(z). The clustering layer is the one dpc generates from
examples/kmeansnet_tell.dp (loaded with `dpc.load`, nothing of it is written here):

    s = softmax(2 cos(z, C_j) / tau)           # the cosine k-means layer, centroids C learned

and the clustering network is `nn.Sequential(encoder, layer)`: image -> cluster probabilities.
Why the cosine (TELL) layer and not examples/kmeansnet.dp: an encoder can scale its features
freely, and the Euclidean k-means objective falls when every feature shrinks towards its
centroid; the cosine layer is blind to scale, and it sees exactly what the decoder reads
(the direction of z), so clustering and reconstruction act on the same representation.

Recipe (the defaults), per seed:
 1. pretrain the autoencoder alone: 150 epochs, Adam lr 1e-3, batches of 128, Gaussian input
    noise 0.2 (pixels scaled to [0, 1]), loss = squared reconstruction error per image;
 2. centroids = KMeans(10, n_init=10) on the normalised codes of the pretrained encoder
    (this clustering *is* the two-step pipeline's result; `--n-init` sets the restarts);
 3. train encoder, decoder and centroids together for 50 epochs (Adam, lr 1e-4 for the
    autoencoder, 1e-2 for the centroids: `--lr`, `--lr-centroids`), tau = 0.2, loss per batch
        reconstruction + lam * KL(P || s),   lam = 1,
    P the sharpened target of DEC/IDEC (Xie et al. 2016; Guo et al. 2017) computed from the
    layer's own output on the batch: P_ij = s_ij^2 / sum_i s_ij, rows renormalised, held fixed
    (no gradient). `--loss kmeans` uses the layer's relaxed k-means objective,
    `layer.objective(z, s)`, in place of the KL (TELL's loss; it did not help, docs/kmeans.md);
    `--tau-end` anneals tau over the epochs (it did not help either);
    the merge fix (`--reseat`, part of the end-to-end method, label-free): at the start of each of the
    first 25 epochs, if one cluster (argmax of s over all images) holds more than 1.5 times the mean
    share N/K, it is taken to hold two groups: it is split in two along its principal direction and
    the two other clusters whose merge costs least (Ward) are merged, which frees the slot
    (`reseat_merged`; a merged start is a k-means solution, so k-means restarts keep it);
 4. clusters = argmax of s.

Baselines, on the same seeds: KMeans(10, n_init=10) on the pixels; SpectralClustering
(nearest-neighbour affinity, 10 neighbours); the two-step pipeline (step 2 above: the same
autoencoder trained alone, then k-means on its codes); and, by default (`--no-equal-epochs` drops it),
the two-step pipeline at equal training: the same autoencoder trained alone for 150 + 50 epochs (as
many as end to end trains it in all), then k-means the same way; and end to end without the merge fix
(the same run; rerun only on the seeds where the fix moved, identical elsewhere). Scores: ACC (clusters matched to
classes by the Hungarian algorithm), NMI, ARI, mean +- std over seeds, and wall time per seed
(the autoencoder methods include their pretraining). The plot (deep_kmeans.png) shows, for the
first seed, a 2-D t-SNE of the end-to-end codes coloured by cluster and the ten centroids
decoded to images.

    python examples/train_deep_kmeans.py              # 10 seeds (0..9), table, verdict, plot
    python examples/train_deep_kmeans.py --smoke      # a few seconds: everything runs, numbers meaningless

Needs numpy, scipy, scikit-learn, tqdm, matplotlib and torch (`pip install -e .[examples]`).
"""
from __future__ import annotations

import argparse
import copy
import pathlib
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans, SpectralClustering
from sklearn.datasets import load_digits
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from torch import nn
from tqdm import tqdm

import dpc

HERE = pathlib.Path(__file__).resolve().parent
LAYER_PROGRAM = HERE / "kmeansnet_tell.dp"
METHODS = ("k-means (pixels)", "spectral (pixels)", "two-step (AE, then k-means)", "end to end (AE + layer)")
EQUAL = "two-step, equal epochs"  # --equal-epochs: the autoencoder alone for pretrain + end-to-end epochs
NOFIX = "end to end, no merge fix"  # --reseat: the same end-to-end run without reseat_merged (rerun only where it moved)


def load_data():
    """Digits: 1797 images of 8 x 8 pixels scaled to [0, 1], float32 rows, and their labels 0..9."""
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


def cluster_accuracy(labels, clusters) -> float:
    """ACC: the fraction of samples right under the best one-to-one map of clusters to classes."""
    size = max(labels.max(), clusters.max()) + 1
    counts = np.zeros((size, size))
    np.add.at(counts, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(-counts)
    return counts[rows, cols].sum() / len(labels)


def scores(labels, clusters) -> dict:
    return {"ACC": cluster_accuracy(labels, clusters),
            "NMI": normalized_mutual_info_score(labels, clusters),
            "ARI": adjusted_rand_score(labels, clusters)}


# --- the feature network -------------------------------------------------------------------

def mlp(sizes):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class AutoEncoder(nn.Module):
    """An MLP autoencoder whose decoder reads the direction of the code: x -> z, normalize(z) -> x."""

    def __init__(self, dim=16, hidden=(512, 256), pixels=64):
        super().__init__()
        self.encoder = mlp([pixels, *hidden, dim])
        self.decoder = nn.Sequential(mlp([dim, *reversed(hidden), pixels]), nn.Sigmoid())

    def decode(self, z):
        return self.decoder(F.normalize(z, dim=-1))

    def reconstruction_loss(self, z, x):
        """The squared error per image, averaged over the batch."""
        return (self.decode(z) - x).square().sum(-1).mean()


def batches(n, batch, gen):
    perm = torch.randperm(n, generator=gen)
    return [perm[i:i + batch] for i in range(0, n, batch)]


def pretrain(ae, x, epochs, gen, batch=128, lr=1e-3, noise=0.2, tick=None):
    """Denoising pretraining: reconstruct each image from a copy with Gaussian noise added."""
    optimiser = torch.optim.Adam(ae.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in batches(len(x), batch, gen):
            xb = x[idx]
            loss = ae.reconstruction_loss(ae.encoder(xb + noise * torch.randn(xb.shape, generator=gen)), xb)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if tick:
            tick()


def codes(encoder, x):
    """The encoder's normalised codes as float64 numpy rows (what the cosine layer and k-means see)."""
    with torch.no_grad():
        return F.normalize(encoder(x), dim=-1).double().numpy()


# --- the clustering layer, trained end to end ----------------------------------------------

def load_layer():
    """The class dpc generates from examples/kmeansnet_tell.dp."""
    return dpc.load(LAYER_PROGRAM)


def sharpened_target(s):
    """DEC's target: P_ij proportional to s_ij^2 / (cluster j's soft size), rows summing to 1; no gradient."""
    with torch.no_grad():
        p = s.square() / s.sum(0)
        return p / p.sum(-1, keepdim=True)


def clustering_loss(layer, z, s, loss="kl"):
    """KL(P || s) per sample, averaged (loss="kl"), or the layer's relaxed k-means objective (loss="kmeans")."""
    if loss == "kmeans":
        return layer.objective(z, s).mean()
    p = sharpened_target(s)
    return (p * (p.clamp_min(1e-12).log() - s.clamp_min(1e-12).log())).sum(-1).mean()


def split_in_two(z, iters=10):
    """Two halves of a set of unit codes: the sides of its principal direction, refined by spherical 2-means.

    -> a boolean mask (True: the first half). Deterministic, no random restarts."""
    centred = z - z.mean(0)
    direction = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    first = centred @ direction > 0
    for _ in range(iters):
        if first.all() or not first.any():
            break
        means = F.normalize(torch.stack([z[first].mean(0), z[~first].mean(0)]), dim=-1)
        new = (z @ means.T).argmax(-1) == 0
        if torch.equal(new, first):
            break
        first = new
    return first


def reseat_merged(z, C, s, max_share=1.5):
    """The merge fix: if one cluster holds too much of the data, split it and merge the two cheapest clusters.

    z: the codes of the whole data set, C: the centroids, s: the layer's output on z. A cluster whose
    share (argmax of s) exceeds max_share times the mean share N/K is taken to hold two groups: it is
    split in two along its principal direction (split_in_two), and the slot this needs is freed by
    merging the two other clusters whose merge raises the k-means objective least (Ward's cost,
    n_a n_b / (n_a + n_b) * |m_a - m_b|^2 on the unit codes). The labels are not used.
    -> (new centroids, (big, a, b): the cluster split, and the pair merged into a; the second half goes
    to b) or (C, None) when no cluster is too large."""
    with torch.no_grad():
        u = F.normalize(z, dim=-1)
        labels = s.argmax(-1)
        K = C.shape[0]
        sizes = torch.bincount(labels, minlength=K)
        big = int(sizes.argmax())
        if sizes[big] <= max_share * len(u) / K:
            return C, None
        members = u[labels == big]
        first = split_in_two(members)
        if first.all() or not first.any():
            return C, None
        means = torch.stack([u[labels == j].mean(0) if sizes[j] else C[j] for j in range(K)])
        best, pair = None, None
        for a in range(K):
            for b in range(a + 1, K):
                if big in (a, b):
                    continue
                na, nb = float(sizes[a]), float(sizes[b])
                cost = na * nb / max(na + nb, 1.0) * float((means[a] - means[b]).square().sum())
                if best is None or cost < best:
                    best, pair = cost, (a, b)
        a, b = pair
        new = C.clone()
        scale = C.norm(dim=-1).mean()  # keep the centroids' norm (the cosine layer does not see it)
        union = (labels == a) | (labels == b)
        if union.any():  # two empty clusters merge for free: a keeps its centroid
            new[a] = scale * F.normalize(u[union].mean(0), dim=-1)
        new[big] = scale * F.normalize(members[first].mean(0), dim=-1)
        new[b] = scale * F.normalize(members[~first].mean(0), dim=-1)
        return new, (big, a, b)


def train_end_to_end(ae, layer, x, epochs, gen, batch=128, lr=1e-4, lr_centroids=1e-2, lam=1.0, loss="kl",
                     tau_end=None, reseat=None, reseat_epochs=None, reseats=None, tick=None):
    """Encoder, decoder and centroids together on reconstruction + lam * clustering loss; -> per-epoch losses.

    tau_end: anneal the layer's temperature geometrically, epoch by epoch, from layer.tau to tau_end.
    reseat: the merge fix (reseat_merged with max_share=reseat), checked at the start of each of the first
    reseat_epochs epochs (default: the first half) on the codes of all of x; each move is appended to the
    list reseats as (epoch, big, a, b), and the optimiser's state for the centroids is cleared."""
    model = nn.Sequential(ae.encoder, layer)  # image -> cluster probabilities
    optimiser = torch.optim.Adam([{"params": ae.parameters(), "lr": lr},
                                  {"params": layer.parameters(), "lr": lr_centroids}])
    history = []
    tau = layer.tau
    reseat_epochs = epochs // 2 if reseat_epochs is None else reseat_epochs
    for epoch in range(epochs):
        if tau_end is not None:
            layer.tau = tau * (tau_end / tau) ** (epoch / max(1, epochs - 1))
        if reseat is not None and epoch < reseat_epochs:
            with torch.no_grad():
                z_all = ae.encoder(x)
                C, move = reseat_merged(z_all, layer.C, layer(z_all), reseat)
            if move is not None:
                with torch.no_grad():
                    layer.C.copy_(C)
                optimiser.state.pop(layer.C, None)  # Adam's moments for the old centroids
                if reseats is not None:
                    reseats.append((epoch, *move))
        total = 0.0
        for idx in batches(len(x), batch, gen):
            xb = x[idx]
            z = ae.encoder(xb)
            s = layer(z)
            value = ae.reconstruction_loss(z, xb) + lam * clustering_loss(layer, z, s, loss)
            optimiser.zero_grad()
            value.backward()
            optimiser.step()
            total += value.item() * len(idx)
        history.append(total / len(x))
        if tick:
            tick()
    return model, history


# --- one seed of every method ----------------------------------------------------------------

def run_seed(X, y, seed, args, Layer, tick=None):
    """-> ({method: scores}, {method: seconds}, the end-to-end pieces for the plot)."""
    results, times = {}, {}
    t0 = time.perf_counter()
    results[METHODS[0]] = scores(y, KMeans(10, n_init=10, random_state=seed).fit_predict(X))
    t1 = time.perf_counter()
    spectral = SpectralClustering(10, affinity="nearest_neighbors", n_neighbors=10, random_state=seed)
    results[METHODS[1]] = scores(y, spectral.fit_predict(X))
    t2 = time.perf_counter()
    times[METHODS[0]], times[METHODS[1]] = t1 - t0, t2 - t1

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(X)
    ae = AutoEncoder(args.dim)
    pretrain(ae, x, args.pretrain_epochs, gen, tick=tick)
    km = KMeans(10, n_init=args.n_init, random_state=seed).fit(codes(ae.encoder, x))
    results[METHODS[2]] = scores(y, km.labels_)
    t3 = time.perf_counter()
    times[METHODS[2]] = t3 - t2
    if args.equal_epochs:  # the same autoencoder, trained alone as long as end to end trains it in all
        alone = copy.deepcopy(ae)
        pretrain(alone, x, args.epochs, torch.Generator().set_state(gen.get_state()), tick=tick)
        km_alone = KMeans(10, n_init=args.n_init, random_state=seed).fit(codes(alone.encoder, x))
        results[EQUAL] = scores(y, km_alone.labels_)
        times[EQUAL] = time.perf_counter() - t3 + times[METHODS[2]]
        t3 = time.perf_counter()

    reseat = args.reseat or None
    start = (copy.deepcopy(ae), gen.get_state()) if reseat else None
    layer = Layer(C=torch.as_tensor(km.cluster_centers_, dtype=torch.float32), tau=args.tau)
    moves = []
    model, history = train_end_to_end(ae, layer, x, args.epochs, gen, lr=args.lr, lr_centroids=args.lr_centroids,
                                      lam=args.lam, loss=args.loss,
                                      tau_end=args.tau_end, reseat=reseat, reseats=moves, tick=tick)
    with torch.no_grad():
        clusters = model(x).argmax(-1).numpy()
    results[METHODS[3]] = scores(y, clusters)
    times[METHODS[3]] = time.perf_counter() - t3 + times[METHODS[2]]  # its pretraining included
    if reseat:  # the same run without the merge fix: identical unless the fix moved, so rerun only then
        results[NOFIX], times[NOFIX] = results[METHODS[3]], times[METHODS[3]]
        if moves:
            t4 = time.perf_counter()
            plain = Layer(C=torch.as_tensor(km.cluster_centers_, dtype=torch.float32), tau=args.tau)
            plain_model, _ = train_end_to_end(start[0], plain, x, args.epochs, torch.Generator().set_state(start[1]),
                                              lr=args.lr, lr_centroids=args.lr_centroids, lam=args.lam,
                                              loss=args.loss, tau_end=args.tau_end)
            with torch.no_grad():
                results[NOFIX] = scores(y, plain_model(x).argmax(-1).numpy())
            times[NOFIX] = time.perf_counter() - t4 + times[METHODS[2]]
    return results, times, (ae, layer, clusters, history, moves)


def table(rows, times) -> str:
    lines = [f"{'method':30s} {'ACC':>15s} {'NMI':>15s} {'ARI':>15s} {'s/seed':>7s}"]
    for method in rows:
        cells = [f"{np.mean([r[m] for r in rows[method]]):.3f} ± {np.std([r[m] for r in rows[method]]):.3f}"
                 for m in ("ACC", "NMI", "ARI")]
        lines.append(f"{method:30s} " + " ".join(f"{c:>15s}" for c in cells) + f" {np.mean(times[method]):7.1f}")
    return "\n".join(lines)


def verdict(rows) -> str:
    """Whether end to end beats each baseline by more than the larger of the two seed spreads (std)."""
    e2e = rows[METHODS[3]]
    parts = []
    for method in [m for m in rows if m != METHODS[3]]:
        for m in ("ACC", "NMI"):
            a, b = [r[m] for r in e2e], [r[m] for r in rows[method]]
            gap, spread = np.mean(a) - np.mean(b), max(np.std(a), np.std(b))
            word = "beats" if gap > spread else ("is above, within the spread," if gap > 0 else "is below")
            diff = np.subtract(a, b)
            parts.append(f"end to end {word} {method} on {m}: {gap:+.3f} (spread {spread:.3f}; paired by seed "
                         f"{diff.mean():+.3f} ± {diff.std():.3f}, higher on {(diff > 0).sum()}/{len(diff)} seeds)")
    return "\n".join(parts)


def plot(path, X, y, pieces, seed, projection="tsne"):
    """Left: the end-to-end codes in 2-D, coloured by cluster; right: the centroids decoded to images."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ae, layer, clusters = pieces[:3]
    Z = codes(ae.encoder, torch.as_tensor(X))
    if projection == "tsne":
        from sklearn.manifold import TSNE
        P = TSNE(2, init="pca", random_state=seed).fit_transform(Z)
    else:
        from sklearn.decomposition import PCA
        P = PCA(2).fit_transform(Z)
    with torch.no_grad():
        images = ae.decode(layer.C).numpy().reshape(-1, 8, 8)
    # name each cluster by the class it is matched to (Hungarian), for the titles
    counts = np.zeros((10, 10))
    np.add.at(counts, (clusters, y), 1)
    rows, cols = linear_sum_assignment(-counts)
    matched = dict(zip(rows, cols))
    fig = plt.figure(figsize=(11, 4.6))
    ax = fig.add_axes([0.04, 0.08, 0.44, 0.84])
    ax.scatter(P[:, 0], P[:, 1], c=clusters, cmap="tab10", s=5, vmin=-0.5, vmax=9.5)
    ax.set_title(f"end-to-end codes ({projection.upper()}), coloured by cluster, seed {seed}")
    ax.set_xticks([])
    ax.set_yticks([])
    for j in range(10):
        sub = fig.add_axes([0.52 + 0.095 * (j % 5), 0.52 - 0.44 * (j // 5), 0.085, 0.36])
        sub.imshow(images[j], cmap="gray_r", vmin=0, vmax=1)
        sub.set_title(f"cluster {j} ({(clusters == j).sum()})\n~ digit {matched.get(j, '?')}", fontsize=8,
                      color=plt.get_cmap("tab10")(j))
        sub.axis("off")
    fig.text(0.74, 0.95, "centroids decoded to images", ha="center")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10, help="number of seeds, 0..N-1 (default 10)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first..first+N-1 (the recipe was "
                        "chosen on seeds 100..110; docs/kmeans.md)")
    parser.add_argument("--smoke", action="store_true", help="1 seed, 3 + 2 epochs (+ 2 for the equal-epochs row): a check that everything runs")
    parser.add_argument("--pretrain-epochs", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=50, help="end-to-end epochs")
    parser.add_argument("--tau", type=float, default=0.2, help="the layer's temperature")
    parser.add_argument("--tau-end", type=float, default=None,
                        help="anneal tau geometrically to this value over the end-to-end epochs (default: no annealing)")
    parser.add_argument("--n-init", type=int, default=10,
                        help="k-means restarts on the codes, the best inertia kept (two-step and end-to-end init alike)")
    parser.add_argument("--equal-epochs", action=argparse.BooleanOptionalAction, default=True,
                        help="add the two-step pipeline with the autoencoder trained alone for pretrain + end-to-end "
                        "epochs (the same training length as end to end)")
    parser.add_argument("--reseat", type=float, default=1.5,
                        help="the merge fix: a cluster holding more than this many times the mean share N/K is split "
                        "along its principal direction and the two cheapest clusters (Ward) merged, checked each epoch "
                        "of the first half of end-to-end training (default 1.5; 0 turns it off)")
    parser.add_argument("--lam", type=float, default=1.0, help="weight of the clustering loss")
    parser.add_argument("--lr", type=float, default=1e-4, help="end-to-end Adam learning rate of the autoencoder")
    parser.add_argument("--lr-centroids", type=float, default=1e-2,
                        help="end-to-end Adam learning rate of the layer's centroids (default 1e-2; 1e-3 until "
                        "the fourth round, docs/kmeans.md)")
    parser.add_argument("--dim", type=int, default=16, help="code dimension")
    parser.add_argument("--loss", choices=("kl", "kmeans"), default="kl",
                        help="clustering loss: DEC's KL to the sharpened target, or the layer's relaxed k-means objective")
    parser.add_argument("--plot", default="deep_kmeans.png", help="where to save the plot ('' for none)")
    parser.add_argument("--projection", choices=("tsne", "pca"), default="tsne")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS/OpenMP threads (default 1)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.pretrain_epochs, args.epochs, args.projection = 1, 3, 2, "pca"
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)

    start = time.perf_counter()
    X, y = load_data()
    Layer = load_layer()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    methods = METHODS[:3] + (EQUAL,) * args.equal_epochs + (NOFIX,) * bool(args.reseat) + METHODS[3:]
    rows = {m: [] for m in methods}
    times = {m: [] for m in methods}
    first = None
    epochs = args.pretrain_epochs + args.epochs * (1 + args.equal_epochs)
    with tqdm(total=len(seeds) * epochs, unit="epoch", desc="training") as bar:
        for seed in seeds:
            results, seconds, pieces = run_seed(X, y, seed, args, Layer, tick=lambda: bar.update(1))
            first = first or (seed, pieces)
            for m in methods:
                rows[m].append(results[m])
                times[m].append(seconds[m])
            bar.write(f"seed {seed}: " + " | ".join(
                f"{m.split(' (')[0]} ACC={results[m]['ACC']:.3f} NMI={results[m]['NMI']:.3f}" for m in methods)
                + "".join(f" | merge fix at epoch {e}: cluster {big} split, {a} and {b} merged" for e, big, a, b in pieces[4]))
    print(f"\ndigits (1797 images, 10 classes), {len(seeds)} seed(s) {seeds.start}..{seeds.stop - 1}, "
          f"mean ± std over seeds")
    print(table(rows, times))
    print(verdict(rows))
    if args.plot:
        plot(args.plot, X, y, first[1], first[0], args.projection)
        print(f"plot: {args.plot}")
    print(f"total wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
