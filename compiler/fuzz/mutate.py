"""Mutation: text-level edits of the examples and of generated programs (lines, tokens, numbers, names,
odd characters, deep nesting, whole-file edits), for the front end's error paths."""
from __future__ import annotations

import keyword
import pathlib
import random
import re

# the repository's examples/ (dpc is installed editable for development: compiler/ is dpc/)
EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"

TOKEN = re.compile(r"\s+|#[^\n]*|sum_[A-Za-z][A-Za-z0-9]*|[A-Za-z_][A-Za-z0-9_]*|"
                   r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|<-|->|>=|<=|.", re.S)
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")

ODD_NUMBERS = ["0", "-1", "1e30", "1e309", "1e-400", "9" * 40, "0.0", "1e-30", "00", "007", ".5", "5.", "1e+5",
               "0e0", "123456789012345678901234567890.5", "-0", "1e-320", "2" * 400, "0." + "0" * 300 + "1",
               "1e99999", "3", "1"]
ODD_NAMES = sorted(set(keyword.kwlist) | {
    "max", "min", "sum", "abs", "len", "print", "float", "int", "range", "list", "object", "super", "id", "exec",
    "eval", "open", "torch", "nn", "F", "self", "steps", "trace", "objective", "forward", "per_layer_parameters",
    "training", "to", "cuda", "double", "extra_repr", "register_buffer", "state_dict", "soft", "norm1", "eye",
    "sum_j", "R", "network", "dims", "in", "var", "learn", "weights", "tied", "untied", "coupled", "k", "zs",
    "_layers", "_soft", "_like", "like", "Wx", "i", "f", "c", "theta", "W", "S", "L", "H", "b", "gamma", "x1", "X",
    "T", "a" * 300, "nonneg", "simplex", "onehot", "box", "sum_jj", "e", "E", "inf", "nan", "math", "np", "U_i",
    "c_next", "z_next", "y", "t", "k1", "kk", "dims_", "Net", "LISTA", "main", "__init__", "__class__", "mT",
    "register_parameter", "dtype", "device", "shape", "unsqueeze"})
ODD_CHARS = ["\x00", "\x01", "\x07", "\x0b", "\x0c", "\r", "\t", "\u2028", "\u2029", "\x85", "\ufeff", "é", "λ",
             "\U0001F600", "\\", "#", "\n", "{", "}", "(", ")", "[", "]", ",", ";", '"', "'", "$", "`", "\u2211",
             "\u00a0", "\u200b", "\x1c", "\x1e", "\r\n", "\\\n", ":", "=", "<-", "@", "^", ".T", "-", "*"]


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


def examples() -> list[str]:
    """The texts of examples/*.dp (none outside a checkout)."""
    return [p.read_text(encoding="utf-8") for p in sorted(EXAMPLES.glob("*.dp"))]


def example_names() -> list[str]:
    return [p.name for p in sorted(EXAMPLES.glob("*.dp"))]


def mutate(text: str, rng: random.Random, ops: int | None = None) -> str:
    """Apply 1-3 random text-level edits."""
    for _ in range(ops or rng.choice([1, 1, 1, 2, 2, 3])):
        text = rng.choice(MUTATIONS)(text, rng)
    return text


def _lines_op(fn):
    def op(text, rng):
        lines = text.split("\n")
        if len(lines) < 2:
            return text
        return "\n".join(fn(lines, rng))
    op.__name__ = fn.__name__
    return op


@_lines_op
def delete_line(lines, rng):
    del lines[rng.randrange(len(lines))]
    return lines


@_lines_op
def duplicate_line(lines, rng):
    i = rng.randrange(len(lines))
    lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return lines


@_lines_op
def swap_lines(lines, rng):
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return lines


@_lines_op
def duplicate_directive(lines, rng):
    found = [ln for ln in lines if re.match(r"\s*(derive|relax|adapt|unroll|learn|output)\b", ln)]
    if found:
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(found))
    return lines


def _tokens_op(fn):
    def op(text, rng):
        toks = tokens(text)
        real = [i for i, t in enumerate(toks) if not t.isspace() and not t.startswith("#")]
        if not real:
            return text
        return "".join(fn(toks, real, rng))
    op.__name__ = fn.__name__
    return op


@_tokens_op
def delete_token(toks, real, rng):
    del toks[rng.choice(real)]
    return toks


@_tokens_op
def duplicate_token(toks, real, rng):
    i = rng.choice(real)
    toks.insert(i, toks[i] + rng.choice(["", " "]))
    return toks


@_tokens_op
def swap_tokens(toks, real, rng):
    k = rng.randrange(len(real))
    i, j = real[k], real[(k + 1) % len(real)] if rng.random() < 0.7 else rng.choice(real)
    toks[i], toks[j] = toks[j], toks[i]
    return toks


@_tokens_op
def replace_number(toks, real, rng):
    nums = [i for i in real if NUMBER.match(toks[i])]
    i = rng.choice(nums or real)
    toks[i] = rng.choice(ODD_NUMBERS)
    return toks


@_tokens_op
def rename_identifier(toks, real, rng):
    idents = [i for i in real if IDENT.match(toks[i])]
    if not idents:
        return toks
    old = toks[rng.choice(idents)]
    new = rng.choice(ODD_NAMES + [toks[j] for j in idents])
    if rng.random() < 0.7:  # every occurrence: a consistent rename
        return [new if t == old else t for t in toks]
    toks[rng.choice(idents)] = new
    return toks


@_tokens_op
def replace_token(toks, real, rng):
    toks[rng.choice(real)] = rng.choice(["+", "-", "*", "/", "@", "^", ".T", "(", ")", ",", "=", "<-", ">=", "in",
                                         "sum_j", "[j]", "R", "R[n]", ":", "{", "}", "0", "x", "z", "D"])
    return toks


@_tokens_op
def deep_nest(toks, real, rng):
    i = rng.choice(real)
    depth = rng.choice([50, 200, 1000, 3000])
    if rng.random() < 0.5:
        toks[i] = "(" * depth + toks[i] + ")" * depth
    elif IDENT.match(toks[i]) or NUMBER.match(toks[i]):
        toks[i] = " + ".join([toks[i]] * depth)
    else:
        toks[i] = "-" * depth + toks[i]
    return toks


def insert_chars(text, rng):
    i = rng.randrange(len(text) + 1)
    return text[:i] + "".join(rng.choice(ODD_CHARS) for _ in range(rng.choice([1, 1, 2, 5]))) + text[i:]


def flip_tying(text, rng):
    swaps = {"tied": "untied", "untied": "tied", "coupled": rng.choice(["tied", "coupled tied", "untied coupled"]),
             "ista": "xavier", "xavier": "ista", "softmax": "sparsemax", "sparsemax": "softmax",
             "proxgrad": rng.choice(["fista", "gd", "closed"]), "fista": "proxgrad", "closed": "proxgrad",
             "weights": rng.choice(["stepsizes", "weights coupled", "weights tied"])}
    toks = tokens(text)
    idx = [i for i, t in enumerate(toks) if t in swaps]
    if not idx:
        return text.rstrip("\n") + "\n" + rng.choice(["learn weights tied", "learn weights", "adapt gates",
                                                      "adapt support", "output z", "unroll 2"]) + "\n"
    i = rng.choice(idx)
    toks[i] = swaps[toks[i]]
    return "".join(toks)


def change_unroll(text, rng):
    return re.sub(r"unroll\s+\d+", "unroll " + rng.choice(["0", "1", "2", "3", "99999999999999999999", "007"]),
                  text)


def splice(text, rng):
    """A line of another example inserted somewhere."""
    other = rng.choice(examples() or [text]).split("\n")
    lines = text.split("\n")
    lines.insert(rng.randrange(len(lines) + 1), rng.choice(other))
    return "\n".join(lines)


def truncate(text, rng):
    return text[:rng.randrange(len(text) + 1)]


def whole_text(text, rng):
    """Edits of the whole file: line endings, a BOM, tabs, nothing at all, a huge program."""
    return rng.choice([
        lambda: text.replace("\n", "\r\n"),
        lambda: "\ufeff" + text,
        lambda: text.replace("  ", "\t"),
        lambda: "",
        lambda: "# only a comment\n",
        lambda: text.rstrip("\n"),
        lambda: text + "\\",
        lambda: text + "\n" * 3 + "   \n",
        lambda: text + "".join(f"hyper h{i} = {i}.5\n" for i in range(rng.choice([200, 3000]))),
        lambda: text.replace("lam", "l" + "a" * rng.choice([300, 20000]) + "m"),
        lambda: re.sub(r"\d", lambda m: chr(0x0660 + int(m.group())), text, count=1),  # an Arabic-Indic digit
        lambda: text.replace("R[", "\uff32["),  # a fullwidth R
    ])()


MUTATIONS = [delete_line, whole_text, delete_line, duplicate_line, swap_lines, duplicate_directive, delete_token, delete_token,
             duplicate_token, swap_tokens, replace_number, replace_number, rename_identifier, rename_identifier,
             rename_identifier, replace_token, deep_nest, insert_chars, insert_chars, flip_tying, flip_tying,
             change_unroll, splice, truncate]

