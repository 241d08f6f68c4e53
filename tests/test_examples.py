"""Every example compiles to a torch-only module that constructs and runs."""
import re

import pytest

from conftest import EXAMPLES, run_dpc

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.dp"))


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_example_compiles_to_torch_only_code(path, tmp_path):
    out = tmp_path / (path.stem + ".py")
    result = run_dpc("compile", str(path), "-o", str(out))
    assert result.returncode == 0, result.stderr
    source = out.read_text()
    for line in source.splitlines():
        if re.match(r"^\s*(import|from)\s", line):
            # torch, and Python's own warnings module (a fixed-point loop that stops at max warns)
            assert re.match(r"^\s*(import torch|from torch|import warnings$)", line), line
    compile(source, str(out), "exec")
