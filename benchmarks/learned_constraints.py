"""Learned values keep their requirements (issue 21 item 2): the learned TV PDHG and ADMM of
tests/test_learned_constraints.py trained 5,000 Adam steps at lr 0.5 (a rate that drives the values out of
their sets when they are trained as themselves, constrain=False), then every constrained value checked.

    python benchmarks/learned_constraints.py [--steps 5000] [--lr 0.5]

Measures and reports; asserts nothing."""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from conftest import build  # noqa: E402
from test_learned_constraints import ADMM, PDHG, in_sets, train, tv_problem  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--lr", type=float, default=0.5)
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    Dd, x, clean = tv_problem(batch=16, seed=1)
    X, C = torch.tensor(x), torch.tensor(clean)
    for name, text in (("PDHG", PDHG), ("ADMM", ADMM)):
        cls = build(text, f"{name}.dp")
        for constrain in (False, True):
            torch.manual_seed(0)
            net = cls(Dd=torch.tensor(Dd), constrain=constrain)
            start = time.time()
            train(net, X, C, args.steps, args.lr)
            values = {n: torch.stack(getattr(net, n)).detach() for n in ("lam", "tau", "sigma", "rho")
                      if hasattr(type(net), n)}
            shown = ", ".join(f"{n} in [{float(v.min()):.3g}, {float(v.max()):.3g}]" for n, v in values.items())
            print(f"{name} constrain={constrain}: {args.steps} steps in {time.time() - start:.1f} s; {shown}; "
                  f"in their sets: {in_sets(net, Dd)}", flush=True)


if __name__ == "__main__":
    main()
