"""Differential fuzzing of the whole compiler: random well-typed programs and mutated examples,
compiled, run, and compared with the numpy reference evaluator (dpc.reference).

    dpc fuzz --programs 2000 [--seed 0] [--jobs 2] [--out DIR] [--mutate-share 0.3] [--timeout 5] [--shrink 3]
    python -m dpc.fuzz ...          (the same command)

Every program runs in a worker process (forked from this one, one torch thread, float64) under a
timeout of 5 s per phase (compile, check, run, reference); a program past it is a `hang` and only its
worker is killed and replaced (a hang is run once more at the end, alone, before it counts). Outcomes:

  ok                compiled (dpc.api.compile_with_program), imported, constructed (random params with
                    normalised columns; default hypers or, half the time, hypers scaled by [0.5, 2];
                    steps=min(T, 4)), ran on a batch of 3, equal to dpc.reference.evaluate within 1e-9
                    of the output's scale (forward and trace=True), forward(steps=s) equal to the
                    trace's layer s, and `objective` equal to dpc.reference.evaluate_objective
  rejected          a DpcError `FILE:LINE:COL: error: ...` naming the right line with the caret under
                    the column (or an error about the invocation: --set); also a ValueError that the
                    generated constructor raises itself (`raise ValueError`: the values break what the
                    derivation assumes, e.g. an infinite Lipschitz bound)
  too_large         dims too large to run: compiled, not run
  bad_error         a DpcError without LINE:COL for a program mistake, or with a wrong line or caret
  crash             any other exception while compiling (RecursionError included), or a dead worker
  hang              past the timeout (twice)
  import_fail       the generated source does not exec, or defines no single network class
  construct_fail    the constructor raised
  run_fail          forward raised, returned the wrong shape, or non-finite values where the
                    reference is finite
  mismatch          differs from dpc.reference (or forward(steps=s) from the trace)
  reference_missing dpc.reference raised (ReferenceError: no rule for an IR node; or anything else)
  check_disagrees   `dpc check FILE [--set ...]` (in-process) accepts what compile rejects or the
                    reverse, reports another first error, or fails internally

With --out DIR every failing program is written as DIR/<outcome>_<n>.dp with DIR/<outcome>_<n>.txt
(the error or the difference); the first few of each kind are shrunk (chunks of lines, then of tokens
deleted while the kind stays the same) and DIR/summary.md lists the kinds with one reproducer each.

Generation (dpc.fuzz.generate, class Gen) builds programs from the typing rules of compiler/lower.py;
the atoms it calls come from their declarations (dpc.declare.declared(role): elementwise, smooth,
threshold, reduction; each fed an argument in its domain, given scalar arguments of the kinds it
declares, weighted by its fuzz weight), so a newly declared atom is fuzzed without editing the fuzzer.
It writes objective programs (LASSO and relatives, constraints, derive proxgrad/fista/gd/closed,
relax), k-means style closed forms (sum_j, relax onehot/binary), update programs (one state or a
block of simultaneous states with lets, ISTA-like thresholded affine updates or random
expressions), programs without params, deep random expressions, and every directive (unroll, learn
weights tied/untied/coupled [except NAME ...], learn stepsizes, learn NAME [tied | untied], adapt gates/support, output NAME or
EXPR; the copies of `learn NAME untied` are scaled apart and given to the reference). Mutation
(dpc.fuzz.mutate) edits examples and generated programs at the text level: lines, tokens, numbers, names,
odd characters, deep nesting.

One module a responsibility: palette (the declared atoms, by role), expressions and generate (programs),
mutate, check (classify one program against dpc.reference), judge (is an error located right), outcome,
pool (worker processes, timeouts), shrink, report, campaign (a run: make_jobs, run), cli (`dpc fuzz`).
torch is imported only by the workers (and the parent's warm-up before it forks them), never by importing
this package.
"""
from dpc.fuzz.outcome import OUTCOMES, PASSING, Result  # noqa: F401  (the public names)
from dpc.fuzz.generate import Gen, generate  # noqa: F401
from dpc.fuzz.mutate import mutate  # noqa: F401
from dpc.fuzz.judge import judge_error  # noqa: F401
from dpc.fuzz.check import DEFAULT_HOOKS, Hooks, classify, compare  # noqa: F401
from dpc.fuzz.pool import Pool, warm_up  # noqa: F401
from dpc.fuzz.shrink import kind_of, shrink  # noqa: F401
from dpc.fuzz.report import Failure, Report, write_failures  # noqa: F401
from dpc.fuzz.campaign import make_jobs, run  # noqa: F401
