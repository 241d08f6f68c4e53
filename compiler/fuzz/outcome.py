"""What classifying one program can end in (the outcomes listed in dpc.fuzz's docstring), and the Result
every part of the fuzzer passes around."""
from __future__ import annotations

import dataclasses

OUTCOMES = ("ok", "rejected", "too_large", "bad_error", "crash", "hang", "import_fail", "construct_fail",
            "run_fail", "mismatch", "reference_missing", "check_disagrees", "ill_conditioned")
PASSING = ("ok", "rejected", "too_large", "ill_conditioned")


@dataclasses.dataclass
class Result:
    outcome: str
    message: str = ""       # one line
    detail: str = ""        # traceback, error text or the difference
    verified: bool = False  # ok and compared with dpc.reference


def one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def exc_line(e: BaseException) -> str:
    return one_line(f"{type(e).__name__}: {e}")
