"""Running programs in parallel: forked worker processes, one program at a time each, under a timeout per
phase that kills (and replaces) only the worker past it. torch is imported here only in warm_up (the parent,
before forking) and in the workers."""
from __future__ import annotations

import collections
import dataclasses
import os
import sys
import tempfile
import time
import traceback

from dpc.fuzz.outcome import Result, exc_line


def warm_up():
    """Imports and sympy caches in the parent, so forked workers start warm (no torch op runs here:
    forking after OpenMP work is unsafe)."""
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import dpc.cli  # noqa: F401
    import dpc.reference  # noqa: F401
    from dpc.api import compile_with_program
    from dpc.fuzz.check import FILE
    from dpc.fuzz.mutate import examples
    for text in examples():
        try:
            compile_with_program(text, FILE)
        except Exception:  # noqa: BLE001 - the fuzzer reports it, not the warm-up
            pass


_PHASE = None  # in a worker: tells the parent a new phase starts (each phase gets the whole timeout)


def phase(name: str):
    """Mark the start of a phase of one program (compile, check, run, reference): the timeout counts from here."""
    if _PHASE is not None:
        _PHASE(name)


def _worker_main(conn, target):
    import warnings
    import torch
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    warnings.simplefilter("ignore")
    workdir = tempfile.mkdtemp(prefix="dpcfuzz")
    os.chdir(workdir)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    while True:
        try:
            job = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if job is None:
            return
        key, args = job
        global _PHASE
        _PHASE = lambda phase: conn.send(("phase", key, phase))  # noqa: E731
        try:
            result = target(*args)
        except BaseException as e:  # noqa: BLE001
            result = Result("crash", f"worker: {exc_line(e)}", traceback.format_exc())
        _PHASE = None
        # plain tuples: no class identity to share with the parent
        conn.send(("done", key, dataclasses.astuple(result)))


class Pool:
    """`jobs` forked workers running target(*args) -> Result; a job past `timeout` s is a hang and its
    worker is killed and replaced; a worker that dies is a crash."""

    def __init__(self, jobs: int, target=None, timeout: float = 5.0, recycle: int = 150):
        import multiprocessing as mp
        self.ctx = mp.get_context("fork")
        self.jobs, self.timeout, self.recycle = max(1, jobs), timeout, recycle
        self.target = target or _classify_here
        self.workers = []

    def _spawn(self):
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker_main, args=(child, self.target), daemon=True)
        proc.start()
        child.close()
        return {"proc": proc, "conn": parent, "job": None, "deadline": None, "done": 0}

    def _kill(self, w):
        try:
            w["proc"].kill()
            w["proc"].join(5)
        except Exception:  # noqa: BLE001
            pass
        w["conn"].close()

    def close(self):
        for w in self.workers:
            try:
                w["conn"].send(None)
            except Exception:  # noqa: BLE001
                pass
        for w in self.workers:
            w["proc"].join(2)
            if w["proc"].is_alive():
                self._kill(w)
        self.workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def run(self, items):
        """items: iterable of (key, args). Yields (key, Result) as they finish."""
        from multiprocessing.connection import wait
        pending = collections.deque(items)
        while len(self.workers) < min(self.jobs, max(1, len(pending))):
            self.workers.append(self._spawn())
        while pending or any(w["job"] is not None for w in self.workers):
            for i, w in enumerate(self.workers):
                if w["job"] is None and pending:
                    if w["done"] >= self.recycle or not w["proc"].is_alive():
                        self._kill(w)
                        w = self.workers[i] = self._spawn()
                    key, args = pending.popleft()
                    w["job"], w["deadline"], w["phase"] = key, time.monotonic() + self.timeout, "start"
                    w["conn"].send((key, args))
            busy = [w for w in self.workers if w["job"] is not None]
            now = time.monotonic()
            ready = wait([w["conn"] for w in busy], timeout=max(0.0, min(w["deadline"] for w in busy) - now))
            for i, w in enumerate(self.workers):
                if w["job"] is None:
                    continue
                if w["conn"] in ready:
                    try:
                        kind, key, payload = w["conn"].recv()
                        if kind == "phase":
                            w["deadline"], w["phase"] = time.monotonic() + self.timeout, payload
                            continue
                        result = Result(*payload)
                    except (EOFError, OSError):
                        key = w["job"]
                        w["proc"].join(1)
                        result = Result("crash", f"worker died (exit code {w['proc'].exitcode})")
                        self._kill(w)
                        self.workers[i] = self._spawn()
                        yield key, result
                        continue
                    w["job"], w["done"] = None, w["done"] + 1
                    yield key, result
                elif time.monotonic() >= w["deadline"]:
                    key = w["job"]
                    self._kill(w)
                    self.workers[i] = self._spawn()
                    yield key, Result("hang", f"{w['phase']}: no result within {self.timeout:g} s")


def _classify_here(text, seed, overrides):
    """The default job: classify one program in the worker's own directory."""
    from dpc.fuzz.check import classify
    return classify(text, seed, overrides, workdir=".")
