"""The package surface: __all__, stubs, py.typed, and the quickstart example."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import chatter
from chatter import _native

PKG = Path(chatter.__file__).parent
REPO = Path(__file__).resolve().parents[2]


def test_every_public_name_exists_and_is_documented() -> None:
    for name in chatter.__all__:
        assert hasattr(chatter, name), name
        obj = getattr(chatter, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{name} has no docstring"


def test_py_typed_ships() -> None:
    assert (PKG / "py.typed").exists()


def test_native_stub_matches_the_module() -> None:
    tree = ast.parse((PKG / "_native.pyi").read_text())
    stubbed: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            stubbed[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        elif isinstance(node, ast.FunctionDef):
            stubbed[node.name] = set()
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            stubbed[node.target.id] = set()
    public = {n for n in dir(_native) if not n.startswith("_")} | {"__version__"}
    assert public == set(stubbed)
    for cls, methods in stubbed.items():
        obj = getattr(_native, cls)
        if not inspect.isclass(obj):
            continue
        actual = {n for n in vars(obj) if not n.startswith("_")}
        assert actual == {m for m in methods if not m.startswith("_")}, cls
        for m in methods - {"__new__"}:
            assert hasattr(obj, m), f"{cls}.{m}"


def test_stubtest_when_available() -> None:
    try:
        import mypy.stubtest  # noqa: F401
    except ImportError:
        import pytest

        pytest.skip("mypy is not installed")
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "chatter._native", "--ignore-missing-stub"],
        capture_output=True,
        text=True,
        cwd=PKG.parent.parent if False else None,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_quickstart_example_runs() -> None:
    script = REPO / "examples" / "python" / "quickstart.py"
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert "response: It is 21 °C and sunny in Oslo." in out.stdout
    assert "tokens: 27" in out.stdout
    assert "streamed: It is 21 °C and sunny in Oslo." in out.stdout
