"""Number literals as written in .dp files and `--set`: text -> exact sympy Rational, or a clean error.

A literal becomes an exact rational (`0.1` -> 1/10, so printed math keeps `0.1`), but
only if float64 -- what the generated module computes in -- can hold it; a value out
of range would silently become inf, 0 or a subnormal in the network. The text is
checked before any integer is built from it: Python refuses int/str conversions
beyond 4300 digits, and `sympy.Rational('1e-99999')` builds a 10^99999 denominator
(minutes for `1e99999999`).
"""
from __future__ import annotations

import re
import sys

import sympy as sp

# float64's largest finite value and its smallest normal one, exactly (2^1024 - 2^971 and 2^-1022).
FLOAT_MAX = sp.Rational(sys.float_info.max)
FLOAT_MIN_NORMAL = sp.Rational(sys.float_info.min)
# Decimal exponents of the leading digit that can possibly be in range: 1.7e308 and 2.2e-308.
_MAX_LEAD, _MIN_LEAD = 308, -308

# Significant digits kept from a longer literal: float64 holds about 17; 30 keeps the
# printed math exact for any literal a person types and the rationals small.
SIGNIFICANT_DIGITS = 30

# `unroll N` builds and emits N layers, and `dpc explain`/the generated module's docstring
# describe them; beyond ten thousand layers a network is a typo (or a fuzzer), not a design.
MAX_UNROLL = 10000
# unroll until's max bounds a loop, not stored layers: what limits it is memory under backward unrolled
MAX_UNTIL = 10**9
# A literal size in a type (`R[3]`) becomes a tensor shape the module checks and may
# allocate (eye(n), zeros); a million is far beyond any hand-written problem and keeps
# an extra digit from asking for terabytes.
MAX_DIM = 1000000

# [sign] mantissa [exponent], ASCII digits only ('²'.isdigit() is True; `\d` matches other scripts).
_NUMBER = re.compile(r"([+-]?)(?:([0-9]+)(?:\.([0-9]*))?|\.([0-9]+))(?:[eE]([+-]?)([0-9]+))?", re.ASCII)
_INT = re.compile(r"[0-9]+", re.ASCII)


class LiteralError(Exception):
    """A literal dpc cannot use: `message` says why, `hint` what to write instead."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


def shorten(text: str, limit: int = 24) -> str:
    """A literal as quoted in a message: a 5000-digit one is cut, not printed whole."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _too_large(text: str) -> LiteralError:
    return LiteralError(f"the number {shorten(text)} is too large: float64 holds at most "
                        "1.7976931348623157e308",
                        "write a smaller number (or rescale the problem)")


def _too_small(text: str) -> LiteralError:
    return LiteralError(f"the number {shorten(text)} is too small: float64 rounds a non-zero value "
                        "below 2.2250738585072014e-308 to a subnormal or to 0",
                        "write 0 if you mean zero, or rescale the problem")


def parse_number(text: str) -> sp.Rational:
    """The exact value of a NUMBER/INT literal (an optional leading sign allowed, for `--set`).

    Raises LiteralError for text that is not a number, or a value float64 cannot hold.
    Runs in time linear in the text: no integer is built from more than 30 digits.
    """
    match = _NUMBER.fullmatch(text)
    if match is None:
        raise LiteralError(f"'{shorten(text)}' is not a number", "write e.g. 3, 0.1, 1e-3 or -2.5")
    sign, whole, frac, only_frac, exp_sign, exp_digits = match.groups()
    if only_frac is not None:
        whole, frac = "", only_frac
    frac = frac or ""
    digits = (whole + frac).lstrip("0")
    if not digits:
        return sp.Integer(0)  # 0, 0.0, 0e99999999: zero whatever the exponent
    significant = digits.rstrip("0")
    # value = int(significant) * 10^shift, the exponent still in text until known to be small
    shift_text = (exp_digits or "0").lstrip("0") or "0"
    if len(shift_text) > 12:  # |exponent| >= 10^12: no mantissa of a sane length brings it back
        raise (_too_small(text) if exp_sign == "-" else _too_large(text))
    shift = (-1 if exp_sign == "-" else 1) * int(shift_text) - len(frac) + (len(digits) - len(significant))
    lead = shift + len(significant) - 1  # decimal exponent of the leading digit
    if lead > _MAX_LEAD:
        raise _too_large(text)
    if lead < _MIN_LEAD:
        raise _too_small(text)
    significant, shift = _round(significant, shift)
    value = sp.Integer(int(significant)) * sp.Integer(10) ** shift
    if value > FLOAT_MAX:
        raise _too_large(text)
    if value < FLOAT_MIN_NORMAL:
        raise _too_small(text)
    return -value if sign == "-" else value


def _round(significant: str, shift: int) -> tuple[str, int]:
    """Round a digit string to SIGNIFICANT_DIGITS (half up), adjusting the power of ten."""
    if len(significant) <= SIGNIFICANT_DIGITS:
        return significant, shift
    kept = significant[:SIGNIFICANT_DIGITS]
    shift += len(significant) - SIGNIFICANT_DIGITS
    if significant[SIGNIFICANT_DIGITS] >= "5":
        kept = str(int(kept) + 1)  # 999...9 + 1 gains a digit: the trailing zero is stripped below
    stripped = kept.rstrip("0")
    return stripped, shift + len(kept) - len(stripped)


def parse_value(text: str) -> sp.Rational:
    """A `--set` value: a number with an optional sign, or a fraction `p/q` of two such numbers."""
    parts = [part.strip() for part in text.split("/")]
    if len(parts) > 2 or not all(_NUMBER.fullmatch(part) for part in parts):
        raise LiteralError(f"'{shorten(text)}' is not a number",
                           "write a number or a fraction p/q (q not 0), e.g. 0.2, -1e-3 or 1/3")
    if len(parts) == 1:
        return parse_number(parts[0])
    p, q = parse_number(parts[0]), parse_number(parts[1])
    if q == 0:
        raise LiteralError(f"'{shorten(text)}' divides by zero", "a fraction p/q needs q != 0, e.g. 1/3")
    value = p / q
    if abs(value) > FLOAT_MAX:
        raise _too_large(text)
    if value != 0 and abs(value) < FLOAT_MIN_NORMAL:
        raise _too_small(text)
    return value


def parse_count(text: str, what: str, high: int) -> int:
    """An integer literal of ASCII digits within 1..high (`unroll 16`, `R[3]`, `--set unroll=32`).

    `what` names it in messages. The length is checked before int(): int() of 4301 digits
    raises ValueError, and nothing this long is in range anyway.
    """
    hint = f"write a whole number from 1 to {high}, with the digits 0-9"
    if _INT.fullmatch(text) is None:
        raise LiteralError(f"{what} needs a positive integer, got '{shorten(text)}'", hint)
    digits = text.lstrip("0") or "0"
    count = int(digits) if len(digits) <= len(str(high)) else high + 1
    if count < 1:
        raise LiteralError(f"{what} needs a positive integer, got {shorten(text)}", hint)
    if count > high:
        raise LiteralError(f"{what} is at most {high}, got {shorten(text)}", hint)
    return count


def _overflowing(expr):
    """The numbers in expr that float64 cannot hold (finite, |x| > FLOAT_MAX; or nan), largest first. The
    infinities are the IR's own (a half-open box's bound) and print as such."""
    found = [a for a in expr.atoms(sp.Number)
             if a is sp.nan or a is sp.zoo or (a.is_finite and abs(a) > FLOAT_MAX)]
    return sorted(found, key=lambda a: -abs(a) if a.is_finite else -sp.oo)


def check_derived_constants(program) -> None:
    """A derivation multiplies the literals a program writes (the gradient of 1e308*sqnorm(r) holds 2e308):
    a constant past float64's range would print as a bare inf in the module. A DpcError at the objective
    term (or the declaration) that holds the literal it came from."""
    from dpc.errors import DpcError
    exprs = [e for _, e in (program.step.lets + program.step.assigns)] if program.step else []
    if program.first_step:
        exprs += [e for _, e in program.first_step.lets + program.first_step.assigns]
    exprs += [e for _, e in program.closed_form]
    exprs += [d.value for d in program.decls if d.value is not None]
    exprs += [r.expr for r in program.requirements]  # step conditions multiply steps and norms too
    for expr in exprs:
        big = _overflowing(expr)
        if not big:
            continue
        span, source = _origin(program)
        size = sp.Float(big[0], 4) if big[0].is_finite else big[0]
        raise DpcError(f"the derivation makes a constant float64 cannot hold (about {size}, above its largest "
                       f"{sys.float_info.max:.4g}), from {source}", span,
                       "scale the objective down (its minimiser does not change) or write smaller constants")


def _origin(program):
    """Where the largest literal the program writes sits: an objective term, else a declaration."""
    best = (sp.Integer(0), None, "a constant")
    for term, span in program.term_spans:
        numbers = [abs(a) for a in term.atoms(sp.Number) if a.is_finite]
        if numbers and max(numbers) > best[0]:
            best = (max(numbers), span, "this term")
    for d in program.decls:  # as written: a let a pass added (its note says why) has the directive's span
        if d.value is not None and d.kind in ("hyper", "let", "var") and not d.note:
            numbers = [abs(a) for a in d.value.atoms(sp.Number) if a.is_finite]
            if numbers and max(numbers) > best[0]:
                best = (max(numbers), d.span, f"{d.kind} {d.name}")
    return best[1], best[2]
