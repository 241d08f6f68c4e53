"""Shrinking a failing program: chunks of lines, then of tokens, deleted (ddmin) while the failure keeps its
kind (kind_of: the outcome and its message with the program's names and numbers abstracted)."""
from __future__ import annotations

import re
import time

from dpc.fuzz.mutate import tokens
from dpc.fuzz.outcome import Result
from dpc.fuzz.pool import Pool


def kind_of(result: Result, text: str = "") -> str:
    """A failure's kind, for deduplication: the outcome and its message with the program's names,
    numbers and quoted text abstracted."""
    msg = result.message
    if result.outcome == "mismatch":
        msg = re.sub(r"\[\d+\]", "", msg.split(":")[0])
    elif result.outcome == "hang":
        msg = msg.split(":")[0]  # the phase
    elif result.outcome == "bad_error":
        msg = re.sub(r":\s*\S*fuzz\.dp.*", "", msg)
        msg = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", msg)
    names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    msg = re.sub(r"'([A-Za-z_][A-Za-z0-9_]*)'", lambda m: "'<name>'" if m.group(1) in names else m.group(0), msg)
    msg = re.sub(r"\S*fuzz\.dp:\d+:\d+", "FILE:L:C", msg)
    msg = re.sub(r"(?<![A-Za-z_0-9])\d+(\.\d+)?(e[-+]?\d+)?", "N", msg)
    return f"{result.outcome}: {msg[:120]}"


def _spaced_tokens(text: str) -> list[str]:
    """Tokens with the whitespace after them: deleting one never glues its neighbours together."""
    out: list[str] = []
    for t in tokens(text):
        if t.isspace() and out:
            out[-1] += t
        else:
            out.append(t)
    return out


def shrink(text: str, result: Result, pool: Pool, seed: int, overrides=None, budget: int = 150,
           seconds: float = 30.0) -> tuple[str, Result]:
    """Delete chunks of lines, then of tokens (halves, quarters, ... single ones: ddmin), while the failure
    keeps its kind; candidates run in parallel batches of pool.jobs, the first that keeps the kind wins."""
    want = kind_of(result, text)
    tries = 0
    deadline = time.monotonic() + seconds
    if result.outcome == "hang":
        budget = min(budget, 12)
    best, best_result = text, result
    for unit in ("lines", "tokens"):
        parts = best.split("\n") if unit == "lines" else _spaced_tokens(best)
        joiner = "\n" if unit == "lines" else ""
        chunk = max(1, len(parts) // 2)
        while tries < budget and time.monotonic() < deadline:
            i, progress = 0, False
            while i < len(parts) and tries < budget and time.monotonic() < deadline:
                starts = list(range(i, len(parts), chunk))[:max(1, pool.jobs)]
                candidates = [parts[:k] + parts[k + chunk:] for k in starts]
                candidates = [(k, c) for k, c in zip(starts, candidates) if joiner.join(c).strip()]
                if not candidates:
                    break
                tries += len(candidates)
                results = dict(pool.run([(n, (joiner.join(c), seed, overrides)) for n, (_, c) in
                                         enumerate(candidates)]))
                hit = next((n for n in range(len(candidates))
                            if kind_of(results[n], joiner.join(candidates[n][1])) == want), None)
                if hit is None:
                    i = starts[-1] + chunk
                    continue
                i, parts = candidates[hit][0], candidates[hit][1]
                best, best_result, progress = joiner.join(parts), results[hit], True
            if chunk == 1 and not progress:
                break
            chunk = max(1, chunk // 2) if not progress or chunk > 1 else 1
        if result.outcome == "hang":
            break
    best = re.sub(r"\n{3,}", "\n\n", best)
    return best, best_result
