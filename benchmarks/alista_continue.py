"""Issue 25: is ALISTA's 5.4 dB gap to the published -78 dB training length? Take the finished reference-schedule
network (layer 16, test -72.58 dB) and keep training all 32 numbers end to end on fresh batches of 64 (Adam,
examples/sparse_coding.train_end_to_end: lr -> x0.2 -> x0.02 within each chunk, best validation kept), reporting
the layer-16 test NMSE after each chunk. Not part of the reference schedule: a probe of how much more training gives.

    python benchmarks/alista_continue.py LR STEPS_PER_CHUNK SECONDS [--checkpoint CK.pt] [--module alista.py]
    python benchmarks/alista_continue.py 1e-4 2000 600     # docs/lista_family.md's probe
"""
import argparse
import importlib.util
import pathlib
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
import sparse_coding as sc  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("lr", type=float)
ap.add_argument("chunk", type=int, help="Adam steps per chunk (each chunk: lr, x0.2, x0.02, best validation kept)")
ap.add_argument("budget", type=float, help="seconds; a chunk that starts before the budget ends is finished")
ap.add_argument("--checkpoint", default="/work/runs/alista_ref/noiseless_ALISTA.pt",
                help="the reference-schedule run's checkpoint (benchmarks/sparse_coding.py --checkpoint DIR)")
ap.add_argument("--module", default="/work/runs/modules/alista.py", help="the module that run trained (dpc compile examples/alista.dp)")
ap.add_argument("--out", default=None, help="save the network's state here after each chunk")
args = ap.parse_args()
torch.set_num_threads(1)
spec = importlib.util.spec_from_file_location("alista_mod", args.module)
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
problem = sc.make_problem(m=250, n=500, p=0.1, snr_db=None, seed=0, n_val=1000, n_test=1000, dtype=torch.float32)
ck = torch.load(args.checkpoint, weights_only=False)
net = mod.ALISTA(D=problem.A, lam=0.4 / 1.001, steps=16)
net.load_state_dict(ck["trainer"]["net"])
problem.generator.manual_seed(12345)  # a training stream of its own, not the schedule's
y, x = problem.test
lr, chunk, budget = args.lr, args.chunk, args.budget
print(f"start: layer-16 test NMSE {sc.nmse_per_layer(net, y, x)[-1]:.2f} dB; lr {lr}, {chunk} steps a chunk", flush=True)
t0, steps = time.time(), 0
while time.time() - t0 < budget:
    sc.train_end_to_end(net, problem, steps=chunk, lr=lr, quiet=True)
    steps += chunk
    curve = sc.nmse_per_layer(net, y, x)
    print(f"{steps:7d} steps, {time.time() - t0:6.0f} s: layer-16 test NMSE {curve[-1]:.2f} dB (layer 15 {curve[-2]:.2f})", flush=True)
    if args.out:
        torch.save(net.state_dict(), args.out)
