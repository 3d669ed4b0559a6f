"""The configuration reference cannot drift: every environment variable the project reads is
in docs/configuration.md and .env.example with the default the code has, and nothing else
is; the example's values work; production refuses the example's secrets."""

from __future__ import annotations

import ast
import re
import secrets
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.core.conftest import Checkout
from tests.fakes.openai_server import RETIRED_MODELS

ENV_HELPERS = {"env_str", "env_bool", "env_int", "env_list", "env_crontab", "env_rate"}
NO_DEFAULT = object()  # the variable is unset by default
COMPUTED = object()  # a default computed from other settings: described in words
PYTHON_READERS = [ROOT / "snapasset", ROOT / "jobs", ROOT / "cleanup", ROOT / "flowerconfig.py"]
SHELL_READERS = [ROOT / "Procfile", ROOT / "Procfile.dev", ROOT / "docker-compose.yml"]
# Set by the process that starts ours, not configuration.
NOT_CONFIGURATION = {"DJANGO_SETTINGS_MODULE"}


def constant(node: ast.expr | None) -> object:
    """The value of a default made of literals only (7 * 24 * 3600 included)."""
    if node is None:
        return NO_DEFAULT
    if not all(isinstance(n, ast.Constant | ast.BinOp | ast.operator) for n in ast.walk(node)):
        return COMPUTED
    value = eval(compile(ast.Expression(node), "<default>", "eval"), {"__builtins__": {}})
    return NO_DEFAULT if value in ("", None) else value


def python_reads(path: Path) -> dict[str, object]:
    """Variables read in one module: the settings' env_* helpers, os.environ.get, os.getenv."""
    found: dict[str, object] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        name = node.args[0]
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            continue
        func = ast.unparse(node.func)
        if func in ENV_HELPERS or func in {"os.environ.get", "os.getenv"}:
            default = node.args[1] if len(node.args) > 1 else None
            found.setdefault(name.value, constant(default))
    return found


def variables_read() -> dict[str, object]:
    """Every variable the project reads, with its default where the code has a literal one."""
    found: dict[str, object] = {}
    for reader in PYTHON_READERS:
        for path in [reader] if reader.is_file() else sorted(reader.rglob("*.py")):
            if "migrations" not in path.parts:
                for name, default in python_reads(path).items():
                    found.setdefault(name, default)
    for path in SHELL_READERS:
        for name in re.findall(r"\$\{([A-Z][A-Z0-9_]*)(?::?-[^}]*)?\}", path.read_text()):
            found.setdefault(name, COMPUTED)
    for name in NOT_CONFIGURATION:
        found.pop(name, None)
    return found


def documented() -> dict[str, str]:
    """docs/configuration.md's variable tables: name -> default cell."""
    text = (ROOT / "docs" / "configuration.md").read_text().split("\n## Variables\n")[1]
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \| ([^|]*) \| [^|]*\S[^|]* \|$", text, re.M)
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), "a variable is documented twice"
    return {name: default.strip() for name, default in rows}


def example() -> dict[str, tuple[bool, str]]:
    """.env.example: name -> (active, value); a commented `# NAME=value` shows a default."""
    found: dict[str, tuple[bool, str]] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"(# )?([A-Z][A-Z0-9_]*)=(.*)", line)
        if match:
            assert match[2] not in found, f"{match[2]} is twice in .env.example"
            found[match[2]] = (match[1] is None, match[3])
    return found


def shown(value: object) -> str:
    """A default as the documentation and .env.example write it."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def test_the_settings_are_where_variables_are_found() -> None:
    read = variables_read()
    assert read["OPENAI_IMAGE_MODEL"] == "gpt-image-2.6-sunburst"
    assert read["SUPABASE_SIGNED_URL_EXPIRES_SECONDS"] == 7 * 24 * 3600
    assert read["DEBUG"] is False
    assert read["SECRET_KEY"] is COMPUTED and read["OPENAI_API_KEY"] is NO_DEFAULT
    assert read["FLOWER_PORT"] == "5555" and read["WORKER_CONCURRENCY"] is COMPUTED
    assert len(read) > 80


def test_every_variable_the_project_reads_is_documented_and_nothing_else() -> None:
    read, docs = set(variables_read()), set(documented())
    assert not read - docs, f"not in docs/configuration.md: {sorted(read - docs)}"
    assert not docs - read, f"documented but read nowhere: {sorted(docs - read)}"


def test_the_documented_defaults_are_the_code_defaults() -> None:
    docs = documented()
    for name, default in variables_read().items():
        if default is NO_DEFAULT:
            assert docs[name].startswith("unset"), f"{name}: {docs[name]!r} (no default)"
        elif default is not COMPUTED:
            assert docs[name] == f"`{shown(default)}`", f"{name}: {docs[name]!r} != {default!r}"


def test_the_env_example_lists_every_variable_with_its_default() -> None:
    read, listed = variables_read(), example()
    assert not set(read) - set(listed), (
        f"missing in .env.example: {sorted(set(read) - set(listed))}"
    )
    assert not set(listed) - set(read), f"read nowhere: {sorted(set(listed) - set(read))}"
    for name, (active, value) in listed.items():
        default = read[name]
        if not active and default not in (NO_DEFAULT, COMPUTED):
            assert value == shown(default), f"# {name}={value} but the default is {default!r}"


def test_the_env_example_names_a_model_that_is_not_shut_down() -> None:
    model = example()["OPENAI_IMAGE_MODEL"][1]
    assert model == variables_read()["OPENAI_IMAGE_MODEL"]
    assert model not in RETIRED_MODELS


# --- The example as a .env, for real ---------------------------------------------------------

EXAMPLE_SECRETS = ["SECRET_KEY", "METRICS_TOKEN", "FLOWER_BASIC_AUTH"]


@pytest.fixture
def example_checkout(checkout: Checkout, tmp_path: Path) -> Checkout:
    """A checkout whose .env is .env.example as it is (`cp .env.example .env`)."""
    checkout.write_env((ROOT / ".env.example").read_text())
    return checkout


def check(tree: Checkout, **env: str) -> Any:
    return tree.python("manage.py", "check", LOG_TO_FILES="false", **env)


def test_every_value_of_the_env_example_works_in_development(example_checkout: Checkout) -> None:
    result = check(example_checkout, DEBUG="true")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_the_example_secrets_and_names_them(example_checkout: Checkout) -> None:
    result = check(example_checkout)
    assert result.returncode != 0
    assert "ImproperlyConfigured: Refusing to start outside development mode" in result.stderr
    assert "secret: SECRET_KEY, METRICS_TOKEN, FLOWER_BASIC_AUTH." in result.stderr
    for name in EXAMPLE_SECRETS:  # named, never shown
        assert example()[name][1] not in result.stderr


def test_production_refuses_the_built_in_secret_key(checkout: Checkout) -> None:
    result = check(checkout)
    assert result.returncode != 0
    assert "secret: SECRET_KEY." in result.stderr


def test_production_refuses_the_compose_example_database_password(
    example_checkout: Checkout,
) -> None:
    """docker-compose builds DATABASE_URL from the example's POSTGRES_PASSWORD."""
    password = example()["POSTGRES_PASSWORD"][1]
    url = f"postgres://snapasset:{password}@127.0.0.1:5432/snapasset"
    result = check(example_checkout, DATABASE_URL=url, **real_secrets())
    assert result.returncode != 0
    assert "secret: DATABASE_URL's password." in result.stderr
    assert password not in result.stderr


def real_secrets() -> dict[str, str]:
    return {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "METRICS_TOKEN": secrets.token_urlsafe(32),
        "FLOWER_BASIC_AUTH": f"ops:{secrets.token_urlsafe(16)}",
    }


def test_the_env_example_with_real_secrets_starts_in_production(example_checkout: Checkout) -> None:
    result = check(example_checkout, **real_secrets())
    assert result.returncode == 0, result.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "uvicorn", "snapasset.asgi:application", "--port", "0"],
        ["-m", "celery", "-A", "snapasset", "worker", "-Q", "images", "--concurrency", "1"],
        ["-m", "celery", "-A", "snapasset", "beat"],
        ["-m", "celery", "-A", "snapasset", "flower", "--port=0"],
    ],
    ids=["uvicorn", "worker", "beat", "flower"],
)
def test_every_process_refuses_the_example_secrets_outside_development(
    example_checkout: Checkout, argv: list[str]
) -> None:
    result = example_checkout.run(
        sys.executable, *argv, env=example_checkout.env(LOG_TO_FILES="false"), timeout=60
    )
    assert result.returncode != 0
    assert "Refusing to start outside development mode" in result.stdout + result.stderr
