"""A constant that a derivation makes too large for float64 (the gradient of 1e308*sqnorm(r) holds 2e308) is
a located error at the term it came from, in every pass that multiplies constants, or the module computes
it: never a bare `inf` or `nan` in generated code (which was a NameError when the module ran)."""
import re

import pytest

from dpc.api import compile_source
from dpc.errors import DpcError

HEAD = """network Over
dims   m, n
input  x : R[m]
param  D : R[m, n]
hyper  lam = 0.1
var    z : R[n] = 0
"""
TV = """network Over
dims   n, p
input  x : R[n]
param  Dd : R[p, n]
var    z : R[n] = 0
"""

PROGRAMS = {
    "proxgrad": HEAD + "minimize 1e308 * sqnorm(x - D @ z) + lam * norm1(z)\nderive proxgrad(step = 0.1)\nunroll 3\n",
    "fista": HEAD + "minimize 1e308 * sqnorm(x - D @ z) + lam * norm1(z)\nderive fista(step = 0.1)\nunroll 3\n",
    "gd": HEAD + "minimize 1e308 * sqnorm(x - D @ z)\nderive gd(step = 0.1)\nunroll 3\n",
    "proxgrad, the step's Lipschitz constant": HEAD + "minimize 1e308 * sqnorm(x - D @ z) + lam * norm1(z)\n"
                                                "derive proxgrad\nunroll 3\n",
    "closed": HEAD + "minimize 1e308 * sqnorm(x - D @ z) + 1e308 * sqnorm(z)\nderive closed\n",
    "learn weights": HEAD + "minimize 1e308 * sqnorm(x - D @ z) + lam * norm1(z)\nderive proxgrad(step = 0.1)\n"
                            "unroll 3\nlearn weights untied\n",
    "admm": TV + "minimize 0.5 * sqnorm(z - x) + 1e308 * norm1(Dd @ z)\nderive admm(rho = 1e308)\nunroll 3\n",
    "pdhg": TV + "minimize 1e300 * sqnorm(z - x) + 1e308 * norm1(Dd @ z)\nderive pdhg(tau = 1e308, sigma = 1e308)\n"
                 "unroll 3\n",
    "a hyper's default": HEAD.replace("lam = 0.1", "lam = 1e308") + "minimize 0.5 * sqnorm(x - D @ z) + "
                         "1e308 * lam * norm1(z)\nderive proxgrad(step = 0.1)\nunroll 3\n",
}


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_derived_overflow_is_an_error_at_the_term_or_a_working_module(name):
    text = PROGRAMS[name] + "output z\n"
    try:
        source = compile_source(text, "over.dp")
    except DpcError as e:
        message = str(e)
        assert re.match(r"over\.dp:\d+:\d+: error: ", message), message
        line = int(message.split(":")[1])
        assert "1e308" in text.splitlines()[line - 1] or "1e300" in text.splitlines()[line - 1], message
        assert "hint:" in message
        return
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("#", '"')))
    assert not re.search(r"(?<![\w'\"])(inf|nan)(?![\w'\"])", code), name
    namespace = {}
    exec(compile(source, "over.py", "exec"), namespace)  # the module at least defines its class


def test_a_large_constant_that_float64_holds_compiles():
    text = HEAD + "minimize 1e300 * sqnorm(x - D @ z) + lam * norm1(z)\nderive proxgrad(step = 0.1)\nunroll 3\noutput z\n"
    assert "2e+300" in compile_source(text, "big.dp")
