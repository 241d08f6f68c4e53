"""The k-means network (examples/kmeansnet.dp) against k-means on scikit-learn's digits.

Trains the network with the recipe of examples/train_kmeansnet.py (k-means++ start,
deterministic annealing of tau on the relaxed objective) and runs
sklearn.cluster.KMeans(n_init=10) for every seed; prints one line per seed, then

    kmeansnet ACC=m±s NMI=m±s ARI=m±s | kmeans ACC=m±s NMI=m±s ARI=m±s

(mean ± std over the seeds). About a minute on one or two CPU cores.

    python benchmarks/kmeans_digits.py [--seeds 10] [--threads 1]
"""
import argparse
import pathlib
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))
from train_kmeansnet import compare, summary  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description="k-means network vs k-means on digits")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest at this size)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    net_rows, km_rows = compare(range(args.seeds), "kmeansnet")
    print(f"{args.seeds} seeds in {time.perf_counter() - start:.0f}s")
    print(f"kmeansnet {summary(net_rows)} | kmeans {summary(km_rows)}")


if __name__ == "__main__":
    main()
