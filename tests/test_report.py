"""`dpc explain --html`: every example's report page rendered by headless Chromium (the Debian package):
the screenshot is not blank, the math is MathML with no TeX left in the page's text, and the text holds
the expected content (the passes, the learned values, the module's signature)."""
import html
import re
import shutil
import subprocess

import pytest

from conftest import EXAMPLES

ALL_EXAMPLES = sorted(p.name for p in EXAMPLES.glob("*.dp"))
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(tmp_path, page, *args):
    if BROWSER is None:
        pytest.skip("headless Chromium is needed (apt-get install -y chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
             "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([BROWSER, *flags, *args, page.as_uri()], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("example", ALL_EXAMPLES)
def test_every_examples_report_renders_in_chromium(tmp_path, example):
    pytest.importorskip("latex2mathml")
    pytest.importorskip("matplotlib")
    from PIL import Image
    from dpc.cli import main
    page = tmp_path / "report.html"
    assert main(["explain", str(EXAMPLES / example), "--html", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    # self-contained: nothing fetched (namespace URIs in the SVG are names, not requests)
    assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?(https?:)?//""", text) and "<link" not in text
    shot = tmp_path / "shot.png"
    run = chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1200,1600", "--dump-dom")
    assert shot.exists(), run.stderr[-2000:]
    image = Image.open(shot).convert("L")
    histogram = image.histogram()
    assert sum(histogram[:200]) > 0.02 * image.width * image.height  # ink, not a blank page
    dom = run.stdout
    assert dom.count("<math") >= 5
    words = html.unescape(re.sub(r"<svg.*?</svg>|<style.*?</style>|<[^>]+>", " ", dom, flags=re.S))
    assert not re.search(r"\\[A-Za-z]+", words), re.findall(r".{30}\\[A-Za-z]+.{30}", words)[:5]
    from dpc.derivation import Explanation
    e = Explanation.from_path(EXAMPLES / example)
    for stage in e.stages:
        assert stage.label in words, stage.label
    for heading in ("Source", "Derivation", "Network", "Learned values", "Generated module"):
        assert heading in words
    assert f"class {e.program.name}(" in words and "def __init__(self" in words and "def forward(self" in words
    assert "<svg" in dom


def test_the_report_works_without_the_optional_packages(tmp_path, monkeypatch):
    """Without latex2mathml the math is dpc's plain text; the page is still whole."""
    import sys
    monkeypatch.setitem(sys.modules, "latex2mathml", None)
    monkeypatch.setitem(sys.modules, "latex2mathml.converter", None)
    from dpc.derivation import Explanation
    page = Explanation.from_path(EXAMPLES / "lista.dp").html()
    assert "<math" not in page and "Learned values" in page and "<code>" in page
