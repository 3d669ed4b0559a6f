"""The deployment files agree with the project: every command in docker-compose.yml, the
Procfile and Procfile.dev names a real module, app and queue, and they agree with each other.
(Docker cannot run here; the same commands run for real in the end-to-end tests.)"""

from __future__ import annotations

import importlib
import re
import shlex
from typing import Any

import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands

from snapasset.celery import app as celery_app
from tests.conftest import ROOT

APP_SERVICES = ("web", "worker-images", "worker-cleanup", "worker-webhooks", "beat", "flower")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def procfile(name: str) -> dict[str, str]:
    entries = {}
    for line in (ROOT / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            process, command = line.split(":", 1)
            entries[process.strip()] = command.strip()
    return entries


def commands_of(command: str | list[str]) -> list[list[str]]:
    """The program invocations in a command, looking inside `sh -c "a && exec b"`."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if argv[:2] == ["sh", "-c"]:
        return [
            part
            for chunk in argv[2].split("&&")
            if (part := [a for a in shlex.split(chunk) if a != "exec"])
        ]
    return [argv]


def option(argv: list[str], *names: str) -> str | None:
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name:
                return argv[index + 1]
            if arg.startswith(f"{name}="):
                return arg.split("=", 1)[1]
    return None


def signature(argv: list[str]) -> tuple[Any, ...]:
    """What must agree between the files: program, app, subcommand, queues, node prefix."""
    if argv[0] == "uvicorn":
        return ("uvicorn", argv[1])
    if argv[0] == "gunicorn":
        return ("gunicorn", argv[1], option(argv, "-k", "--worker-class"))
    if argv[0] == "celery":
        queues = option(argv, "-Q", "--queues")
        node = option(argv, "-n", "--hostname")
        return ("celery", option(argv, "-A", "--app"), argv[3], queues, node and node.split("@")[0])
    return tuple(argv[:3])


def check_invocation(argv: list[str]) -> None:
    program = argv[0]
    if program in {"uvicorn", "gunicorn"}:
        module, attribute = argv[1].split(":")
        assert hasattr(importlib.import_module(module), attribute)
    if program == "gunicorn":
        # An ASGI app needs an ASGI worker: uvicorn's, with every process's bind and count.
        worker_class = option(argv, "-k", "--worker-class")
        assert worker_class == "uvicorn_worker.UvicornWorker"
        module, name = worker_class.rsplit(".", 1)
        assert hasattr(importlib.import_module(module), name)
        assert option(argv, "-b", "--bind") and option(argv, "-w", "--workers")
    elif program == "celery":
        assert option(argv, "-A", "--app") == "snapasset"
        assert importlib.import_module("snapasset").celery_app is celery_app
        assert celery_app.main == "snapasset"
        subcommand = argv[3]
        assert subcommand in {"worker", "beat", "flower"}
        routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
        if subcommand == "worker":
            queues = option(argv, "-Q", "--queues")
            assert queues, "a worker names its queues"
            for queue in queues.split(","):
                assert queue in settings.WORKER_QUEUES and queue in routed, queue
        if subcommand == "flower":
            assert (ROOT / "flowerconfig.py").exists()
    elif program == "python":
        if argv[1] == "manage.py":
            assert argv[2] in get_commands()
        elif argv[1] == "-m":
            importlib.import_module(argv[2])
        else:
            assert argv[1] == "-c"
    elif program not in {"uvicorn", "gunicorn"}:
        raise AssertionError(f"unknown program {program!r}")


def test_compose_has_every_process_on_one_image_with_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "redis", *APP_SERVICES}
    images = {(services[name]["image"], services[name]["build"]) for name in APP_SERVICES}
    assert images == {("snapasset:latest", ".")}, "one image for all, via the x-app anchor"
    assert "x-app" in compose and "<<: *app" in (ROOT / "docker-compose.yml").read_text()
    for name, service in services.items():
        assert "healthcheck" in service, name
    for name in APP_SERVICES:
        assert services[name]["env_file"] == ".env"
        assert services[name]["environment"]["REDIS_URL"].startswith("redis://redis:")
        assert services[name]["environment"]["DATABASE_URL"].startswith("postgres://")
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert (ROOT / ".env.example").exists()


@pytest.mark.parametrize("service", APP_SERVICES)
def test_each_compose_command_exists_in_the_project(compose: dict[str, Any], service: str) -> None:
    definition = compose["services"][service]
    for argv in commands_of(definition["command"]):
        check_invocation(argv)
    test = definition["healthcheck"]["test"]
    if test[0] == "CMD" and test[1] == "python":
        check_invocation(test[1:])
    if "snapasset.ops.heartbeat" in test:
        # The checked node is the one the worker runs as: -n NAME@%h with the hostname.
        worker = commands_of(definition["command"])[0]
        node = option(worker, "-n").replace("%h", definition["hostname"])
        assert test[-1] == node


def test_compose_procfile_and_procfile_dev_run_the_same_processes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    in_compose = {
        "web": signature(commands_of(services["web"]["command"])[-1]),
        "worker": signature(commands_of(services["worker-images"]["command"])[0]),
        "cleanup": signature(commands_of(services["worker-cleanup"]["command"])[0]),
        "webhooks": signature(commands_of(services["worker-webhooks"]["command"])[0]),
        "beat": signature(commands_of(services["beat"]["command"])[0]),
    }
    production, development = procfile("Procfile"), procfile("Procfile.dev")
    for name, expected in in_compose.items():
        assert signature(shlex.split(production[name])) == expected, name
        assert signature(shlex.split(development[name])) == expected, name
        check_invocation(shlex.split(production[name]))
    assert in_compose["worker"][3] == "images" and in_compose["cleanup"][3] == "cleanup"
    assert in_compose["webhooks"][3] == "webhooks"
    release = shlex.split(production["release"])
    check_invocation(release)
    assert release[2] == "migrate"


def test_the_dockerfile_builds_a_slim_non_root_image_with_static_files() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert "collectstatic --noinput" in dockerfile
    cmd = re.search(r"^CMD (.+)$", dockerfile, re.M)
    assert cmd is not None
    web = commands_of(yaml.safe_load(cmd.group(1)))
    assert signature(web[-1]) == (
        "gunicorn",
        "snapasset.asgi:application",
        "uvicorn_worker.UvicornWorker",
    )
    for argv in web:
        check_invocation(argv)
