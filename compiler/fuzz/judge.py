"""Judging a DpcError: every diagnostic must be `FILE:LINE:COL: error: ...` naming this file, a line and a
column inside the program, with that source line shown (or a window of it, "...part...") and a caret
under the column -> rejected; anything else is a bad_error."""
from __future__ import annotations

import re

from dpc.fuzz.outcome import one_line


def _display_width(text: str) -> int:
    """Terminal columns: wide (CJK, fullwidth, emoji) characters take two."""
    import unicodedata
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _same_char(shown: str, true: str) -> bool:
    """A shown character stands for the source's: itself, or any one character for a tab or an
    invisible one (control, format, separator characters are shown as a placeholder)."""
    return shown == true or true == "\t" or not (true.isprintable() or true == " ")


def _locate_window(body: str, true: str, col: int) -> list:
    """Where the shown line `body` may sit in the source line: offsets to add to an index of body to get
    an index of the line (shifted by the "..." marker), none when it is not the line (a long line may be
    shown as a window "...part..." around the column)."""
    found = []
    for left in (False, True):
        for right in (False, True):
            core = body[3 if left else 0:len(body) - 3 if right else len(body)]
            if (left or right) and not (body.startswith("...") if left else True) \
                    or right and not body.endswith("..."):
                continue
            starts = range(1, len(true) + 1) if left else [0]
            for k in starts:
                if k + len(core) > len(true) or right and k + len(core) == len(true):
                    continue
                if not right and k + len(core) != len(true):
                    continue
                if all(_same_char(a, b) for a, b in zip(core, true[k:k + len(core)])) \
                        and k <= col - 1 <= k + len(core):
                    found.append(k - (3 if left else 0))
    return found


LOCATED = re.compile(r"^(?P<file>.*?):(?P<line>\d+):(?P<col>\d+): error: ")


def judge_error(e, text: str, file: str) -> tuple[str, str]:
    """A DpcError -> (rejected | bad_error, why). Every diagnostic must be `FILE:LINE:COL: error: ...`
    with the source line it names and a caret under the column (or be about the invocation)."""
    diagnostics = getattr(e, "diagnostics", None) or []
    if not diagnostics:
        return "bad_error", "DpcError without diagnostics"
    source_lines = text.split("\n")
    for d in diagnostics:
        block = d.format(e.source).split("\n")
        head = block[0]
        m = LOCATED.match(head)
        if not m:
            if d.span is None and re.match(r"(--set|cannot read)", d.message):
                continue
            return "bad_error", f"no FILE:LINE:COL: {one_line(head)}"
        if m.group("file") != file:
            return "bad_error", f"names file {m.group('file')!r}, not {file!r}: {one_line(head)}"
        line, col = int(m.group("line")), int(m.group("col"))
        if not 1 <= line <= len(source_lines):
            return "bad_error", f"line {line} is past the end ({len(source_lines)} lines): {one_line(head)}"
        true = source_lines[line - 1]
        true = true[:-1] if true.endswith("\r") else true
        if not 1 <= col <= len(true) + 1:
            return "bad_error", f"column {col} is past the end of line {line} ({len(true)} chars): {one_line(head)}"
        rest = [b for b in block[1:] if not b.startswith("  hint:")]
        if true.strip() == "" and not rest:
            continue  # an empty line (end of file): nothing to show
        if len(rest) < 2:
            return "bad_error", f"no source line and caret under: {one_line(head)}"
        shown, caret = rest[0], rest[1]
        body = shown[4:] if shown.startswith("    ") else ""
        offsets = _locate_window(body, true, col)
        if not offsets:
            return "bad_error", f"shows line {line} as {shown[4:]!r}, but it is {true!r}: {one_line(head)}"
        cm = re.fullmatch(r"    ( *)(\^+)", caret)
        wants = [_display_width(body[:col - 1 - k]) + max(0, col - 1 - k - len(body)) for k in offsets]
        if not cm or len(cm.group(1)) not in wants:  # (a periodic line may sit at several offsets)
            return "bad_error", f"caret {caret!r} is not under column {col}: {one_line(head)}"
    return "rejected", one_line(diagnostics[0].format(e.source).split("\n")[0])
