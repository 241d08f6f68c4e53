"""The report of a run: counts by outcome, the failures grouped by kind with one (shrunk) reproducer each,
and the files --out writes (<outcome>_<n>.dp and .txt per failure, summary.md)."""
from __future__ import annotations

import collections
import dataclasses
import os

from dpc.fuzz.outcome import OUTCOMES, PASSING, Result


@dataclasses.dataclass
class Failure:
    index: int
    text: str
    result: Result
    kind: str
    seed: int
    overrides: dict | None = None
    shrunk: str | None = None
    shrunk_result: Result | None = None
    origin: str = ""


@dataclasses.dataclass
class Report:
    counts: collections.Counter
    failures: list
    elapsed: float          # running the programs (shrinking excluded)
    jobs: int
    verified: int
    shrink_time: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        parts = ", ".join(f"{o} {self.counts[o]}" for o in OUTCOMES if self.counts[o] or o in PASSING)
        rate = self.total / self.elapsed if self.elapsed else 0.0
        line = f"{self.total} programs in {self.elapsed:.0f} s ({self.jobs} jobs, {rate:.1f}/s): {parts}"
        if self.shrink_time:
            line += f"; shrinking {self.shrink_time:.0f} s more"
        if self.counts["ok"]:
            line += f"\n({self.verified} of {self.counts['ok']} ok programs compared with dpc.reference)"
        return line

    def kinds(self) -> dict:
        out: dict[str, list] = {}
        for f in self.failures:
            out.setdefault(f.kind, []).append(f)
        return out

    def describe_failures(self, limit: int = 20) -> str:
        lines = []
        for kind, fs in sorted(self.kinds().items(), key=lambda kv: -len(kv[1]))[:limit]:
            f = fs[0]
            text = f.shrunk or f.text
            lines += [f"== {kind}  (x{len(fs)}, e.g. program {f.index}, {f.origin})",
                      f"   {f.result.message}", *("   | " + ln for ln in _cut(text.rstrip("\n")).split("\n")), ""]
        return "\n".join(lines)


def _cut(text: str, width: int = 240, lines: int = 40) -> str:
    """Long lines and long programs shortened for reading (the .dp files keep them whole)."""
    rows = text.split("\n")
    shown = [ln if len(ln) <= width else ln[:width - 20] + f" ... ({len(ln)} chars)" for ln in rows[:lines]]
    if len(rows) > lines:
        shown.append(f"... ({len(rows) - lines} more lines)")
    return "\n".join(shown)


def write_failures(report: Report, out: str):
    os.makedirs(out, exist_ok=True)
    for f in report.failures:
        base = os.path.join(out, f"{f.result.outcome}_{f.index}")
        text = f.shrunk if f.shrunk is not None else f.text
        with open(base + ".dp", "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        result = f.shrunk_result or f.result
        parts = [f"outcome: {result.outcome}", f"kind: {f.kind}", f"message: {result.message}",
                 f"program {f.index} ({f.origin}), data seed {f.seed}"]
        if f.overrides:
            parts.append(f"overrides (--set): {f.overrides}")
        parts += ["", result.detail or ""]
        if f.shrunk is not None:
            parts += ["", "shrunk from:", f.text]
        with open(base + ".txt", "w", encoding="utf-8", newline="") as fh:
            fh.write("\n".join(parts))
    lines = ["# fuzz failures by kind", "", report.summary(), ""]
    for kind, fs in sorted(report.kinds().items(), key=lambda kv: -len(kv[1])):
        f = fs[0]
        text = f.shrunk if f.shrunk is not None else f.text
        lines += [f"## {kind}", "", f"{len(fs)} programs: " + ", ".join(
            f"{x.result.outcome}_{x.index}" for x in fs[:12]) + (" ..." if len(fs) > 12 else ""), "",
            f"message: `{(f.shrunk_result or f.result).message}`", "", "```", _cut(text.rstrip("\n")), "```", ""]
    with open(os.path.join(out, "summary.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
