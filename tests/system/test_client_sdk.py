"""A client SDK that works because CI proves it: the Python client generated from the served
OpenAPI schema by openapi-python-client (into a temporary folder, never committed: it is
made from the code under test, so a committed copy could only be stale) drives a live
server and worker through tests/system/sdk_smoke.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from snapasset.core.openapi import EVENT_STREAM_EXTENSION
from tests.conftest import ROOT, api_key_for, make_user

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CONFIG = ROOT / "docs" / "openapi-python-client.yaml"


def without_event_streams(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema less the SSE operations (x-event-stream): streams are not calls."""
    paths = {}
    for path, item in schema["paths"].items():
        kept = {m: op for m, op in item.items() if not op.get(EVENT_STREAM_EXTENSION)}
        if kept:
            paths[path] = kept
    return {**schema, "paths": paths}


def generate_client(schema: dict[str, Any], folder: Path) -> Path:
    folder.mkdir()
    (folder / "schema.json").write_text(json.dumps(without_event_streams(schema)))
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "openapi-python-client"), "generate",
            "--path", str(folder / "schema.json"), "--config", str(CONFIG),
            "--meta", "none", "--output-path", str(folder / "snapasset_client"),
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Nothing of the schema dropped ("Unsupported content_type", unparsable responses...).
    assert "Warning" not in output, output
    return folder


def test_the_generated_client_drives_a_live_server(
    start_worker: Any, start_web: Any, tmp_path: Path
) -> None:
    staff = api_key_for(make_user("ops", staff=True))
    token = api_key_for(make_user("alice"))
    start_worker(concurrency=1)
    base = start_web()
    schema = httpx.get(
        f"{base}/api/schema/", params={"format": "json"},
        headers={"Authorization": f"Token {staff}"}, timeout=30,
    ).json()  # fmt: skip
    streams = [p for p, item in schema["paths"].items() for op in item.values()
               if op.get(EVENT_STREAM_EXTENSION)]  # fmt: skip
    assert sorted(streams) == ["/api/sse/jobs/{job_id}", "/api/sse/stats"]

    sdk = generate_client(schema, tmp_path / "sdk")
    package = sdk / "snapasset_client"
    generated = {path.stem for path in (package / "api").rglob("*.py")}
    assert not {"sse_job", "sse_stats"} & generated  # the streams are not offered as calls
    assert (package / "api" / "jobs" / "jobs_download_zip.py").exists()

    env = {**os.environ, "PYTHONPATH": f"{sdk}{os.pathsep}{ROOT}"}
    smoke = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "system" / "sdk_smoke.py"), base, token],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert "SDK smoke: OK" in smoke.stdout
    print(smoke.stdout)
