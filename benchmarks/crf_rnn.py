"""CRF as RNN (examples/crf_rnn.dp; Zheng et al., ICCV 2015) on synthetic noisy segmentation maps: pixel
accuracy on held-out maps of the unaries alone, the untrained mean field (Potts compatibility, its weight
tuned on the training maps) and the trained one (Mu and w trained on the training maps). Measures; asserts
nothing.

    python benchmarks/crf_rnn.py              # the table (markdown) and the plot docs/img/crf_rnn.png
    python benchmarks/crf_rnn.py --quick      # a smoke run

Data: maps of --side x --side sites (N = side^2), k labels: label 0 the background, then 2-4 random shapes
(axis-aligned rectangles and disks), each of a random label 1..k-1, drawn in order (later ones on top).
Noisy class scores s = 2 * onehot(label) + --noise * Gaussian, independent per site and label; the
unaries are U = -log softmax(s) along the labels (the negative log of normalised noisy class scores), so
argmin U is the per-site classifier. A fixed split: --train maps (seed 0) and --test maps (seed 1).
Affinity: A_ij = exp(-|p_i - p_j|^2 / (2 theta^2)) on the grid positions (theta = --theta), zero diagonal.
Networks, compiled by dpc from examples/crf_rnn.dp at --layers layers:
  - untrained: Mu = 1 - I (Potts), w the best pixel accuracy on the training maps over a grid;
  - trained: `learn Mu, w` as written, from that start: Adam (lr --lr) on the mean cross-entropy
    -log Q_i(label_i) over the training maps' sites, full batch, --steps steps; one torch thread.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from perf_common import machine_line  # noqa: E402

CRF = (ROOT / "examples" / "crf_rnn.dp").read_text()


def maps(count, side, k, rng):
    """count label maps (count, side, side): background 0 and 2-4 random rectangles and disks."""
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    out = np.zeros((count, side, side), dtype=np.int64)
    for m in out:
        for _ in range(rng.integers(2, 5)):
            label = rng.integers(1, k)
            if rng.random() < 0.5:
                h, w = rng.integers(side // 4, side // 2 + 1, 2)
                r, c = rng.integers(0, side - h + 1), rng.integers(0, side - w + 1)
                m[r:r + h, c:c + w] = label
            else:
                radius = rng.uniform(side / 8, side / 4)
                r, c = rng.uniform(0, side, 2)
                m[(rows - r) ** 2 + (cols - c) ** 2 <= radius ** 2] = label
    return out


def unaries(labels, k, noise, rng):
    """U = -log softmax(2 onehot + noise * Gaussian) per site: (count, N, k)."""
    flat = labels.reshape(len(labels), -1)
    scores = 2.0 * np.eye(k)[flat] + noise * rng.standard_normal(flat.shape + (k,))
    scores -= scores.max(-1, keepdims=True)
    return -(scores - np.log(np.exp(scores).sum(-1, keepdims=True)))


def affinity(side, theta):
    pos = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2).astype(float)
    A = np.exp(-((pos[:, None] - pos[None]) ** 2).sum(-1) / (2 * theta ** 2))
    np.fill_diagonal(A, 0.0)
    return A


def network_class(layers):
    from dpc.api import compile_source
    source = compile_source(CRF, "crf_rnn.dp", {"unroll": str(layers)})
    namespace: dict = {"__name__": "crf_rnn_generated"}
    exec(compile(source, "crf_rnn.dp", "exec"), namespace)
    return namespace["CRFRNN"]


def accuracy(Q, labels):
    return float((Q.argmax(-1).reshape(labels.shape) == labels).mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=16)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--noise", type=float, default=1.5)
    parser.add_argument("--theta", type=float, default=1.5)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--plot", default=str(ROOT / "docs" / "img" / "crf_rnn.png"))
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sets, few steps, no plot")
    args = parser.parse_args(argv)
    if args.quick:
        args.train, args.test, args.steps, args.plot = 20, 20, 5, None

    import torch
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    start = time.perf_counter()
    k = args.k
    train_labels = maps(args.train, args.side, k, np.random.default_rng(0))
    test_labels = maps(args.test, args.side, k, np.random.default_rng(1))
    U_train = torch.tensor(unaries(train_labels, k, args.noise, np.random.default_rng(10)))
    U_test = torch.tensor(unaries(test_labels, k, args.noise, np.random.default_rng(11)))
    A = torch.tensor(affinity(args.side, args.theta))
    potts = torch.eye(k).neg().add(1.0)
    CRFRNN = network_class(args.layers)

    rows = [("unaries alone (argmin U)", accuracy(-U_train.numpy(), train_labels),
             accuracy(-U_test.numpy(), test_labels), "")]
    grid = [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0]
    with torch.no_grad():
        tuned = [(accuracy(CRFRNN(A=A, Mu=potts, w=w)(U_train).numpy(), train_labels), w) for w in grid]
    best_train, best_w = max(tuned)
    untrained = CRFRNN(A=A, Mu=potts, w=best_w)
    with torch.no_grad():
        rows.append((f"mean field, untrained (Potts, w = {best_w:g} tuned on training)", best_train,
                     accuracy(untrained(U_test).numpy(), test_labels), ""))

    net = CRFRNN(A=A, Mu=potts, w=best_w)
    optimiser = torch.optim.Adam(net.parameters(), lr=args.lr)
    target = torch.tensor(train_labels.reshape(args.train, -1))
    losses = []
    for _ in range(args.steps):
        optimiser.zero_grad()
        Q = net(U_train)
        loss = -(Q.clamp_min(1e-300).log().gather(-1, target.unsqueeze(-1))).mean()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    with torch.no_grad():
        mu = np.array2string(net.Mu.detach().numpy(), precision=2, separator=", ").replace("\n", "")
        rows.append((f"mean field, trained (learn Mu, w; {args.steps} Adam steps)",
                     accuracy(net(U_train).numpy(), train_labels), accuracy(net(U_test).numpy(), test_labels),
                     f"w = {net.w.item():.3g}, Mu = {mu}"))
    elapsed = time.perf_counter() - start

    print(f"CRF as RNN: {args.side}x{args.side} maps, k = {k}, noise {args.noise}, theta {args.theta}, "
          f"{args.layers} layers; {args.train} training / {args.test} held-out maps")
    print(f"cross-entropy on the training maps: {losses[0]:.4f} at the start, {losses[-1]:.4f} after "
          f"{args.steps} steps")
    print()
    print("| | pixel accuracy, training maps | pixel accuracy, held-out maps |")
    print("| --- | --- | --- |")
    for name, train_acc, test_acc, note in rows:
        print(f"| {name} | {100 * train_acc:.2f}% | {100 * test_acc:.2f}% |")
    print()
    print(f"trained values: {rows[-1][3]}")
    print(f"wall time {elapsed:.1f} s; {machine_line(1)}")

    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        with torch.no_grad():
            shown = [test_labels[0], (-U_test[0]).argmax(-1).reshape(args.side, args.side).numpy(),
                     untrained(U_test[:1])[0].argmax(-1).reshape(args.side, args.side).numpy(),
                     net(U_test[:1])[0].argmax(-1).reshape(args.side, args.side).numpy()]
        titles = ["truth", "unaries alone", "mean field, untrained", "mean field, trained"]
        fig, axes = plt.subplots(1, 5, figsize=(15, 3.2))
        for ax, image, title in zip(axes, shown, titles):
            ax.imshow(image, vmin=0, vmax=k - 1, cmap="viridis", interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        axes[4].bar(range(3), [100 * r[2] for r in rows], color=["#999999", "#4477aa", "#228833"])
        axes[4].set_xticks(range(3), ["unaries", "untrained", "trained"], fontsize=8)
        axes[4].set_ylim(min(100 * r[2] for r in rows) - 5, 100)
        axes[4].set_title("held-out pixel accuracy (%)", fontsize=9)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"plot: {pathlib.Path(args.plot).relative_to(ROOT) if args.plot.startswith(str(ROOT)) else args.plot}")


if __name__ == "__main__":
    main()
