"""Model and sampling code takes a device and creates nothing on a hard-coded one; nothing in
the package puts anything on CUDA by name.

A "cpu" or "cuda" literal in these modules is allowed only as a default argument value (a
loader's "load onto the CPU unless told") or in a comparison with a device type (``device_type
== "cpu"``, a kernel choice). Anything else (``torch.zeros(..., device="cpu")``, ``.to("cuda")``,
``torch.autocast("cpu")``) fails this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "titok"
CHECKED = [*sorted((SRC / "models").rglob("*.py")), SRC / "sampling.py", SRC / "training" / "prefix.py"]


def _allowed_nodes(tree: ast.AST) -> set[int]:
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for default in [*node.args.defaults, *node.args.kw_defaults]:
                if default is not None:
                    allowed.add(id(default))
        if isinstance(node, ast.Compare):
            for part in [node.left, *node.comparators]:
                allowed.add(id(part))
        if isinstance(node, ast.Subscript):  # a key named after a device (state["cuda"])
            allowed.add(id(node.slice))
    return allowed


def test_no_device_literal_in_model_or_sampling_code() -> None:
    found = []
    for path in CHECKED:
        tree = ast.parse(path.read_text())
        allowed = _allowed_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in ("cpu", "cuda") and id(node) not in allowed:
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}")
    assert not found, "hard-coded devices (pass a device instead):\n" + "\n".join(found)


def test_the_check_sees_a_hard_coded_device() -> None:
    tree = ast.parse('import torch\ndef f(x, device="cpu"):\n    return torch.zeros(3, device="cuda")\n')
    allowed = _allowed_nodes(tree)
    bad = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and n.value == "cuda" and id(n) not in allowed
    ]
    ok = [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value == "cpu" and id(n) in allowed]
    assert len(bad) == 1 and len(ok) == 1


def test_nothing_in_the_library_is_put_on_cuda_by_name() -> None:
    """Anywhere in the package, "cuda" appears only as a default, a comparison or a key; moving a
    result to the CPU (for numpy, a cache, a hash, loading a file) is allowed outside models."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        allowed = _allowed_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value == "cuda" and id(node) not in allowed:
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not found, "hard-coded CUDA (pass a device instead):\n" + "\n".join(found)
