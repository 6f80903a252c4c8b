"""The README's first Python example runs offline as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_first_python_example_runs_offline(tmp_path: Path, monkeypatch, offline_hub) -> None:
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert block is not None, "the README has no Python example"
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), scope)  # noqa: S102 - the project's own README
    assert tuple(scope["tokens"].shape) == (2, 32)
    assert tuple(scope["samples"].shape) == (2, 3, 64, 64)
