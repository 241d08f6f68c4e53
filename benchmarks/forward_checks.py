"""The cost of forward's check of learned values' requirements (issue 21 item 1): a LISTA-sized network
(m = 250, n = 500, 16 layers, batch 256, float32) with `learn D` and a step that reads D's opnorm nowhere
else in forward (`derive proxgrad(step = 0.1)`: forward's check estimates opnorm(D) by warm-started power
iterations), trained with Adam, every step checked (D changes each step), against check_learned=False;
and the same with `step = 1/L`, L = opnorm(D)^2 (the check reads the L forward computes anyway).

    OMP_NUM_THREADS=1 python benchmarks/forward_checks.py [--steps 30] [--repeats 3]

Median milliseconds per training step (forward + backward + Adam); measures and reports, asserts nothing."""
import argparse
import statistics
import time

import torch

import dpc.api

LISTA = """network P
dims m, n
input x : R[m]
param D : R[m, n]
hyper lam = 0.1
{let}var z : R[n] = 0
minimize 0.5*sqnorm(x - D @ z) + lam*norm1(z)
derive proxgrad(step = {step})
unroll 16
learn D
output z
"""


def build(step, let):
    namespace = {}
    exec(compile(dpc.api.compile_source(LISTA.format(step=step, let=let), "p.dp"), "p.dp", "exec"), namespace)
    return namespace["P"]


def per_step(cls, check, D, x, steps):
    net = cls(D=D, check_learned=check)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    times = []
    for k in range(steps + 3):
        start = time.perf_counter()
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
        if k >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    D = torch.randn(250, 500) / 250 ** 0.5
    D = D / torch.linalg.matrix_norm(D, ord=2)  # opnorm(D) = 1
    x = torch.randn(256, 250)
    for label, step, let in (("step = 0.1 (opnorm(D) estimated by the check)", "0.1", ""),
                             ("step = 1/L, L = opnorm(D)^2 (the check reads forward's L)", "1/L",
                              "let L = opnorm(D)^2\n")):
        cls = build(step, let)
        rows = {check: [per_step(cls, check, D, x, args.steps) for _ in range(args.repeats)] for check in (False, True)}
        off, on = min(rows[False]), min(rows[True])
        print(f"{label}: {off:.2f} ms per step unchecked, {on:.2f} ms checked (+{on - off:.2f} ms, "
              f"{100 * (on - off) / off:+.1f} %)", flush=True)


if __name__ == "__main__":
    main()
