"""A fuzz run: the programs of a seed (make_jobs: generated, or mutated examples and generated programs),
classified in parallel, hangs run once more alone, the first failures of each kind shrunk, the report."""
from __future__ import annotations

import collections
import os
import random
import time

from dpc.fuzz.generate import generate
from dpc.fuzz.mutate import example_names, examples, mutate
from dpc.fuzz.outcome import OUTCOMES, PASSING
from dpc.fuzz.pool import Pool, warm_up
from dpc.fuzz.report import Failure, Report, write_failures
from dpc.fuzz.shrink import kind_of, shrink


def make_jobs(programs: int, seed: int, mutate_share: float, start: int = 0, family: str | None = None):
    """(index, text, data seed, overrides, origin) for programs start..start+programs-1; family: generated
    programs of that family only (dpc.fuzz.generate.FAMILIES), mutate_share ignored."""
    bases = examples()
    for i in range(start, start + programs):
        rng = random.Random(f"dpc-fuzz:{seed}:{i}")
        overrides = None
        if family is not None:
            text, origin = generate(rng, family=family), f"generated {family}"
        elif rng.random() < mutate_share:
            if rng.random() < 0.6 and bases:
                k = rng.randrange(len(bases))
                base, origin = bases[k], f"mutated example {example_names()[k]}"
            else:
                base, origin = generate(rng), "mutated generated program"
            text = mutate(base, rng)
        else:
            text, origin = generate(rng), "generated"
            if rng.random() < 0.04:
                overrides = rng.choice([{"unroll": "3"}, {"unroll": "0"}, {"unroll": "x"}, {"lam": "0.2"},
                                        {"lam": "abc"}, {"nothere": "1"}, {"tau": "1e309"}, {"lam": "-1"}])
        yield i, text, rng.randrange(2 ** 31), overrides, origin


def run(programs: int, seed: int = 0, jobs: int | None = None, out: str | None = None, mutate_share: float = 0.3,
        timeout: float = 5.0, shrink_per_kind: int = 3, shrink_budget: int = 150, shrink_seconds: float = 30.0,
        log=None, family: str | None = None) -> Report:
    jobs = jobs or os.cpu_count() or 1
    warm_up()
    started = time.monotonic()
    counts: collections.Counter = collections.Counter()
    failures: list[Failure] = []
    verified = 0
    texts = {}
    with Pool(jobs, timeout=timeout) as pool:
        items = []
        for i, text, data_seed, overrides, origin in make_jobs(programs, seed, mutate_share, family=family):
            texts[i] = (text, data_seed, overrides, origin)
            items.append((i, (text, data_seed, overrides)))
        done = 0
        for i, result in pool.run(items):
            done += 1
            counts[result.outcome] += 1
            verified += result.verified
            if result.outcome not in PASSING:
                text, data_seed, overrides, origin = texts[i]
                failures.append(Failure(i, text, result, kind_of(result, text), data_seed, overrides, origin=origin))
            if log and (done % max(1, programs // 10) == 0 or done == programs):
                log(f"  {done}/{programs} ({time.monotonic() - started:.0f} s): "
                    + ", ".join(f"{o} {counts[o]}" for o in OUTCOMES if counts[o]))
        # a hang is run once more on its own: the machine may have been busy (other jobs, other users)
        hangs = [f for f in failures if f.result.outcome == "hang"]
        if hangs:
            again = dict(pool.run([(f.index, (f.text, f.seed, f.overrides)) for f in hangs]))
            for f in hangs:
                if again[f.index].outcome != "hang":
                    counts["hang"] -= 1
                    counts[again[f.index].outcome] += 1
                    verified += again[f.index].verified
                    f.result = again[f.index]
                    f.kind = kind_of(f.result, f.text)
            failures = [f for f in failures if f.result.outcome not in PASSING]
        elapsed = time.monotonic() - started
        failures.sort(key=lambda f: f.index)
        shrunk_per_kind: collections.Counter = collections.Counter()
        for f in failures:
            if shrunk_per_kind[f.kind] < shrink_per_kind:
                shrunk_per_kind[f.kind] += 1
                f.shrunk, f.shrunk_result = shrink(f.text, f.result, pool, f.seed, f.overrides, shrink_budget,
                                                   shrink_seconds)
    report = Report(counts, failures, elapsed, jobs, verified, time.monotonic() - started - elapsed)
    if out:
        write_failures(report, out)
    return report
