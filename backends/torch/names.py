"""One namespace hands out every local name the emitter invents: legal, never a keyword,
a builtin, a module alias or a program name; clashes are numbered (k, k1, k2, ...)."""
from __future__ import annotations

import builtins
import keyword

RESERVED = set(keyword.kwlist) | set(dir(builtins)) | {"torch", "nn", "F", "self", "trace", "steps"}


class Namespace:
    def __init__(self, taken=()):
        self.taken = set(RESERVED) | set(taken)

    def fresh(self, base: str) -> str:
        base = "".join(c if c.isalnum() or c == "_" else "_" for c in base) or "v"
        if base[0].isdigit():
            base = "v" + base
        name, i = base, 1
        while name in self.taken:
            name, i = f"{base}{i}", i + 1
        self.taken.add(name)
        return name
