"""The API reference builds from the docstrings without a warning, with the command docs/api.md gives."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_api_site_builds_without_warnings(tmp_path):
    text = (ROOT / "docs" / "api.md").read_text()
    command = re.search(r"^python -m pdoc .*$", text, re.M).group(0)
    args = shlex.split(command)[1:]
    out = args.index("-o")
    args[out + 1] = str(tmp_path / "api")
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "warn" not in (result.stderr + result.stdout).lower(), result.stderr
    pages = {p.name for p in (tmp_path / "api" / "functional_rl").rglob("*.html")}
    for module in ("loop.html", "iteration.html", "update.html", "checkpoint.html", "advantages.html", "batched.html", "base.html"):
        assert module in pages, sorted(pages)
