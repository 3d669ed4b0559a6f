"""The code's shape holds: imports run one way (wiring -> feature apps -> core) and no module
of the project imports itself through others.

The layers are import-linter contracts in pyproject.toml (also run by `make lint`); the cycle
check asks grimp's import graph, which sees function-level imports too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

from tests.conftest import ROOT

PACKAGES = ("snapasset", "jobs", "cleanup", "bench")


def test_imports_run_one_way_as_the_contracts_in_pyproject_say() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--config", "pyproject.toml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_module_of_the_project_imports_itself_through_others() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    cycles = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain is not None:
                cycle = (module, *chain)
                start = cycle.index(min(cycle))  # the same cycle found from each of its modules
                cycles.add(" -> ".join(cycle[start:] + cycle[1 : start + 1]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))
