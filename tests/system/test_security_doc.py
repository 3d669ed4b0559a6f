"""SECURITY.md names a test for every defence, docs/guarantees.md one for every fault: each one
they name must exist."""

from __future__ import annotations

import ast
import re

from tests.conftest import ROOT

# `tests/x/test_y.py::test_name`, or `::test_name` for another test of the file named before.
REFERENCE = re.compile(r"`((?:tests/[\w/]+\.py)?)::(test_\w+)`")


def test_every_test_security_md_names_exists() -> None:
    assert_named_tests_exist("SECURITY.md", at_least=40)


def test_every_test_the_guarantees_name_exists() -> None:
    assert_named_tests_exist("docs/guarantees.md", at_least=25)


def assert_named_tests_exist(document: str, *, at_least: int) -> None:
    text = (ROOT / document).read_text()
    named: list[tuple[str, str]] = []
    path = ""
    for file, name in REFERENCE.findall(text):
        path = file or path
        named.append((path, name))
    assert len(named) > at_least
    missing = []
    for path, name in named:
        tree = ast.parse((ROOT / path).read_text())
        functions = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        if name not in functions:
            missing.append(f"{path}::{name}")
    assert not missing
