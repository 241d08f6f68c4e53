"""The reference schedule (issue 25 item 2): examples/sparse_coding.ReferenceSchedule / ReferenceTrainer
follow the LISTA-CPSS code's rule (VITA-Group/LISTA-CPSS, utils/train.py): a layer's own stage at lr,
then every layer so far at lr * 0.2 and lr * 0.02 with layer k's gradient scaled by decay_rate ** (t - k);
a stage ends at the first age check where the best validation NMSE is more than better_wait iterations
old; a stopped run resumes with the numbers of a run that never stopped."""
import json
import math

import pytest
import torch

from conftest import EXAMPLES, load_benchmark
from dpc.api import compile_file


@pytest.fixture(scope="module")
def sc():
    return load_benchmark("perf_common").sparse_coding()


def generated(name):
    namespace = {"__name__": f"dpc_schedule_{name}"}
    exec(compile(compile_file(str(EXAMPLES / f"{name}.dp")), name, "exec"), namespace)
    return next(v for v in namespace.values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
                and v.__module__ == namespace["__name__"])


def tiny_problem(sc, **kw):
    return sc.make_problem(m=10, n=20, p=0.2, seed=0, n_val=50, n_test=50, dtype=torch.float64, **kw)


def test_schedule_defaults_are_the_reference_config(sc):
    s = sc.ReferenceSchedule()
    assert (s.lr, s.lr_decay, s.decay_rate, s.batch) == (5e-4, (0.2, 0.02), 0.3, 64)
    assert (s.val_step, s.age_every, s.better_wait, s.maxit, s.threshold_scale) == (10, 1000, 4000, 200_000, 1.001)
    assert s.stages(2) == [(1, 0, 5e-4), (1, 1, 5e-4 * 0.2), (1, 2, 5e-4 * 0.02),
                           (2, 0, 5e-4), (2, 1, 5e-4 * 0.2), (2, 2, 5e-4 * 0.02)]


def test_multipliers_follow_the_reference_rule(sc):
    """Replays the reference's bookkeeping (a dict of multipliers, every trained variable's multiplied by
    decay_rate after each layer) and compares every stage's multipliers with the schedule's."""
    s, T = sc.ReferenceSchedule(decay_rate=0.3), 6
    multiplier, trained = {k: 1.0 for k in range(1, T + 1)}, []
    for t in range(1, T + 1):
        assert [s.multiplier(t, 0, k) for k in range(1, T + 1)] == [float(k == t) for k in range(1, T + 1)]
        trained.append(t)
        for stage in (1, 2):
            expected = [multiplier[k] if k in trained else 0.0 for k in range(1, T + 1)]
            assert [s.multiplier(t, stage, k) for k in range(1, T + 1)] == pytest.approx(expected, rel=1e-12)
        for k in trained:
            multiplier[k] *= s.decay_rate
    assert s.multiplier(6, 1, 1) == pytest.approx(0.3 ** 5)


def test_trainer_scales_each_layers_gradient_by_decay_rate_per_later_layer(sc, monkeypatch):
    """One step of layer 4's second stage on ALISTA (per-layer ParameterLists): the gradient Adam gets for
    layer k's gamma and theta is the loss's gradient times 0.3 ** (4 - k); layers after 4 get none."""
    ALISTA = generated("alista")
    problem = tiny_problem(sc)
    net = ALISTA(D=problem.A, lam=0.1, steps=6)
    trainer = sc.ReferenceTrainer(net, problem, sc.ReferenceSchedule(maxit=0), layers=6)
    scaled = trainer.multipliers(4, 1)
    by_param = {id(p): s for p, s in scaled}
    for k in range(1, 7):
        for value in (net.gamma[k - 1], net.theta[k - 1]):
            assert by_param.get(id(value), 0.0) == pytest.approx(0.3 ** (4 - k) if k <= 4 else 0.0)

    y, x = problem.batch(64)
    params = [p for p, _ in scaled]
    raw = torch.autograd.grad(trainer.loss(y, x, 4), params)
    seen = []
    monkeypatch.setattr(sc.TFAdam, "step", lambda self, grads: seen.append([g.clone() for g in grads]))
    monkeypatch.setattr(problem, "batch", lambda size: (y, x))
    trainer.position = trainer.plan.index((4, 1, 5e-4 * 0.2))
    assert not trainer.run(stop=lambda: len(seen) >= 1)
    (grads,) = seen
    for (p, s), g, r in zip(scaled, grads, raw):
        torch.testing.assert_close(g, r * s)


def test_stage_ends_after_the_patience(sc):
    s = sc.ReferenceSchedule()  # val_step 10, age_every 1000, better_wait 4000
    flat = [1.0] * 401          # validations at 0, 10, ..., 4000: the best (the first) is 4000 iterations old
    assert not s.stage_ends(4000, flat)
    assert s.stage_ends(5000, flat + [1.0] * 100)       # 5000 iterations old
    assert not s.stage_ends(4990, flat + [1.0] * 99)    # only checked every 1000
    # best at iteration 990: 4010 iterations old at 5000 -> the stage ends there
    history = [1.0 / (1 + j) for j in range(100)] + [1.0] * 401
    assert s.stage_ends(5000, history)
    # best at iteration 1000: exactly 4000 old at 5000 (not more), so it goes on to 6000
    history = [1.0 / (1 + j) for j in range(101)] + [1.0] * 400
    assert not s.stage_ends(5000, history) and s.stage_ends(6000, history + [1.0] * 100)


def test_a_stage_without_progress_runs_exactly_to_its_patience(sc):
    """lr 0: the validation NMSE never improves, so with val_step 2, age_every 10 and better_wait 20 every
    stage ends at iteration 30 (the first age check where the best, at 0, is more than 20 iterations
    old), i.e. after 31 steps; maxit caps a stage at maxit + 1 steps."""
    ALISTA = generated("alista")
    problem = tiny_problem(sc)
    net = ALISTA(D=problem.A, lam=0.1, steps=2)
    rows = []
    trainer = sc.ReferenceTrainer(net, problem, sc.ReferenceSchedule(lr=0.0, val_step=2, age_every=10,
                                                                      better_wait=20), layers=2)
    assert trainer.run(on_check=rows.append)
    ends = [r for r in rows if r["event"] == "stage_end"]
    assert [(r["layer"], r["stage"]) for r in ends] == [(t, s) for t in (1, 2) for s in range(3)]
    assert all(r["stage_iter"] == 31 for r in ends) and trainer.iterations == 6 * 31
    capped = sc.ReferenceTrainer(ALISTA(D=problem.A, lam=0.1, steps=2), problem,
                                 sc.ReferenceSchedule(lr=0.0, val_step=2, age_every=10, better_wait=20, maxit=14),
                                 layers=2)
    assert capped.run() and capped.iterations == 6 * 15


def test_tied_values_belong_to_layer_one(sc):
    """SC2Net's one cell: trained in layer 1's own stage and, scaled by 0.3 ** (t - 1), in every later
    layer's refinement stages; a later layer's own stage has nothing to train and is skipped."""
    SC2Net = generated("sc2net")
    problem = tiny_problem(sc)
    net = SC2Net(D=problem.A, lam=0.1, steps=3)
    trainer = sc.ReferenceTrainer(net, problem, sc.ReferenceSchedule(maxit=0), layers=3)
    trained = {n for n, p in net.named_parameters() if p.requires_grad}
    assert {id(p) for p, _ in trainer.multipliers(1, 0)} == {id(p) for n, p in net.named_parameters() if n in trained}
    assert trainer.multipliers(2, 0) == []
    assert [s for _, s in trainer.multipliers(3, 2)] == pytest.approx([0.09] * len(trained))
    assert trainer.run() and trainer.iterations == 3 + 2 * 2  # maxit 0: one step a stage that trains


def test_tf_adam_is_tensorflows_adam(sc):
    p = torch.tensor([1.0, -2.0, 3.0])
    opt = sc.TFAdam([p], lr=0.1)
    m = v = torch.zeros(3)
    q = p.clone()
    for step, g in enumerate([torch.tensor([0.1, 1e-9, -3.0]), torch.tensor([0.2, 0.0, 1.0])], start=1):
        opt.step([g])
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        q = q - 0.1 * math.sqrt(1 - 0.999 ** step) / (1 - 0.9 ** step) * m / (v.sqrt() + 1e-8)
        torch.testing.assert_close(p, q)


def test_a_stopped_run_resumes_with_the_numbers_of_one_that_never_stopped(sc):
    LISTA = generated("lista")
    schedule = sc.ReferenceSchedule(val_step=2, age_every=10, better_wait=20, maxit=25)

    def fresh():
        problem = tiny_problem(sc)
        return LISTA(D=problem.A, lam=0.1, steps=3), problem

    net, problem = fresh()
    whole = sc.ReferenceTrainer(net, problem, schedule, layers=3)
    assert whole.run()
    saved, stops = [], iter([17, 40, 95])   # stop mid-stage, at a stage boundary's neighbourhood, later
    net2, problem2 = fresh()
    trainer = sc.ReferenceTrainer(net2, problem2, schedule, layers=3)
    for at in stops:
        assert not trainer.run(save=lambda: saved.append(trainer.state_dict()), stop=lambda: trainer.iterations >= at)
        net2, problem2 = fresh()  # a new process: new objects, state from the checkpoint only
        trainer = sc.ReferenceTrainer(net2, problem2, schedule, layers=3)
        trainer.load_state_dict(saved[-1])
    assert trainer.run()
    assert trainer.iterations == whole.iterations
    for (k, a), b in zip(whole.net.state_dict().items(), trainer.net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_benchmark_reference_schedule_checkpoints_logs_and_resumes(tmp_path):
    """benchmarks/sparse_coding.py --schedule reference at toy sizes: thresholds start at lam / (1.001 L),
    the CSV gets rows per age check, stage end and finished layer, and a rerun reads the finished
    networks back from their checkpoints (no training, the same table)."""
    bench = load_benchmark("sparse_coding")
    args = ["--schedule", "reference", "--noiseless", "--size", "10x20", "--layers", "2", "--only", "ALISTA",
            "--maxit", "20", "--age-every", "10", "--val-step", "2", "--better-wait", "8", "--n-val", "40",
            "--n-test", "40", "--threads", "1", "--checkpoint", str(tmp_path / "ck"), "--log",
            str(tmp_path / "log.csv"), "--out", str(tmp_path / "out")]
    threads = torch.get_num_threads()
    try:
        bench.main(args)
        first = json.loads((tmp_path / "out" / "results.json").read_text())["results"]["noiseless"]
        rows = (tmp_path / "log.csv").read_text().splitlines()
        bench.main(args)
        again = json.loads((tmp_path / "out" / "results.json").read_text())["results"]["noiseless"]
    finally:
        torch.set_num_threads(threads)
    assert rows[0].startswith("time,setting,network,event,layer,stage")
    events = [r.split(",")[3] for r in rows[1:]]
    assert events.count("stage_end") == 6 and events.count("layer_done") == 2 and "check" in events
    assert (tmp_path / "log.csv").read_text().splitlines() == rows  # the rerun trained nothing
    assert first["nmse_db"] == again["nmse_db"] and first["info"]["ALISTA"]["finished"]
    state = torch.load(tmp_path / "ck" / "noiseless_ALISTA.pt", weights_only=False)["trainer"]
    assert state["done"] and state["schedule"]["better_wait"] == 8


def test_a_stacked_weight_is_trained_through_its_active_rows_only(sc, monkeypatch):
    """lista.dp's W is one (steps, n, m) tensor. At layer t the trainer runs Adam on rows 1..t only; the
    result must equal TensorFlow-1 Adam written out here over the WHOLE tensor with the reference's
    multipliers (0 beyond layer t), and the later rows must not move."""
    LISTA = generated("lista")
    problem = tiny_problem(sc)
    net = LISTA(D=problem.A, lam=0.1, steps=5)
    assert net.W.dim() == 3  # the stacked form this test is about
    trainer = sc.ReferenceTrainer(net, problem, sc.ReferenceSchedule(), layers=5)
    t, stage, lr = 3, 1, 5e-4 * 0.2
    scaled = trainer.multipliers(t, stage)
    before = {id(p): p.detach().clone() for p, _ in scaled}
    batches = [problem.batch(64) for _ in range(3)]
    # the expectation: full-tensor Adam (lr_t = lr sqrt(1 - b2^k) / (1 - b1^k), eps outside), by hand
    expected = {id(p): p.detach().clone() for p, _ in scaled}
    moments = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for p, _ in scaled}
    probe = LISTA(D=problem.A, lam=0.1, steps=5)
    for k, (y, x) in enumerate(batches, start=1):
        with torch.no_grad():
            for (p, _), q in zip(scaled, [dict(probe.named_parameters())[n] for n, pp in net.named_parameters()
                                          if any(pp is p for p, _ in scaled)]):
                q.copy_(expected[id(p)])
        probe_params = {n: q for n, q in probe.named_parameters()}
        names = {id(pp): n for n, pp in net.named_parameters()}
        loss = 0.5 * (probe(y, steps=t) - x).pow(2).sum()
        grads = torch.autograd.grad(loss, [probe_params[names[id(p)]] for p, _ in scaled], allow_unused=True)
        lr_t = lr * (1 - 0.999 ** k) ** 0.5 / (1 - 0.9 ** k)
        for (p, s), g in zip(scaled, grads):
            g = torch.zeros_like(p) if g is None else g * s
            m, v = moments[id(p)]
            m.mul_(0.9).add_(g, alpha=0.1)
            v.mul_(0.999).addcmul_(g, g, value=0.001)
            expected[id(p)] = expected[id(p)] - lr_t * m / (v.sqrt() + 1e-8)
    feed = iter(batches)
    monkeypatch.setattr(problem, "batch", lambda size: next(feed))
    trainer.position = trainer.plan.index((t, stage, lr))
    steps = []
    assert not trainer.run(stop=lambda: len(steps) >= 3 or steps.append(1) and False)
    for p, _ in scaled:
        torch.testing.assert_close(p.detach(), expected[id(p)], rtol=1e-12, atol=1e-14)
    assert torch.equal(net.W.detach()[t:], before[id(net.W)][t:])  # layers 4 and 5 untouched
    assert not torch.equal(net.W.detach()[:t], before[id(net.W)][:t])
