"""The Supabase storage backend, through the official client, against the loopback fake."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from jobs.storage import SupabaseStorage, file_with_content_type
from snapasset.core.exceptions import PermanentError, TransientError
from tests.conftest import ROOT, free_port
from tests.fakes.fixtures import BUCKET, supabase_env
from tests.fakes.supabase_server import SERVICE_KEY, FakeSupabase


def storage_for(fake: FakeSupabase, **overrides: Any) -> SupabaseStorage:
    options: dict[str, Any] = {
        "url": fake.url,
        "service_key": SERVICE_KEY,
        "bucket": BUCKET,
        "timeout_seconds": 5,
    }
    options.update(overrides)
    return SupabaseStorage(**options)


# --- Selection --------------------------------------------------------------------------------


def settings_in_child(env: dict[str, str]) -> dict[str, Any]:
    code = (
        "import json, django; django.setup(); from django.conf import settings;"
        "print(json.dumps({'backend': settings.STORAGES['default']['BACKEND'],"
        " 'serve_media': settings.SERVE_MEDIA}))"
    )
    full_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "snapasset.settings", **env}
    for name in ("SUPABASE_URL", "SUPABASE_SERVICE_KEY"):
        if name not in env:
            full_env.pop(name, None)
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_local_disk_stays_the_default_and_supabase_url_selects_supabase(
    fake_supabase: FakeSupabase,
) -> None:
    local = settings_in_child({})
    assert local["backend"] == "django.core.files.storage.FileSystemStorage"
    assert local["serve_media"] is True
    remote = settings_in_child(supabase_env(fake_supabase))
    assert remote["backend"] == "jobs.storage.SupabaseStorage"
    assert remote["serve_media"] is False


def test_supabase_url_without_a_service_key_refuses_to_start() -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "snapasset.settings",
        "SUPABASE_URL": "http://127.0.0.1:9",
    }
    env.pop("SUPABASE_SERVICE_KEY", None)
    out = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "SUPABASE_SERVICE_KEY must be set" in out.stderr


# --- Saving -----------------------------------------------------------------------------------


def test_save_uploads_with_the_content_type_cache_control_and_upsert(
    fake_supabase: FakeSupabase,
) -> None:
    storage = storage_for(fake_supabase, cache_control_seconds=31536000)
    name = storage.save(
        "alice/gen-1/twitter-post.webp", file_with_content_type(b"RIFFdata", "image/webp")
    )
    assert name == "alice/gen-1/twitter-post.webp"
    stored = fake_supabase.get(name)
    assert stored.data == b"RIFFdata"
    assert stored.content_type == "image/webp"
    assert stored.cache_control == "max-age=31536000"
    upload = fake_supabase.uploads[-1]
    assert upload.upsert and upload.method == "POST"
    request = fake_supabase.seen("POST", f"/storage/v1/object/{BUCKET}/alice/")[-1]
    assert request.header("authorization") == f"Bearer {SERVICE_KEY}"
    assert request.header("apikey") == SERVICE_KEY


def test_the_content_type_falls_back_to_the_file_extension(fake_supabase: FakeSupabase) -> None:
    storage = storage_for(fake_supabase)
    storage.save("a/b/original.jpg", ContentFile(b"\xff\xd8\xff"))
    storage.save("a/b/notes.unknownext", ContentFile(b"?"))
    assert fake_supabase.get("a/b/original.jpg").content_type == "image/jpeg"
    assert fake_supabase.get("a/b/notes.unknownext").content_type == "application/octet-stream"


def test_saving_a_name_again_overwrites_it_instead_of_renaming(fake_supabase: FakeSupabase) -> None:
    storage = storage_for(fake_supabase)
    first = storage.save("u/g/instagram-post.png", ContentFile(b"one"))
    second = storage.save("u/g/instagram-post.png", ContentFile(b"two"))
    assert first == second == "u/g/instagram-post.png"
    assert fake_supabase.names() == ["u/g/instagram-post.png"]
    assert fake_supabase.get(first).data == b"two"
    # No existence probe before saving: one request per save.
    assert [r.method for r in fake_supabase.requests] == ["POST", "POST"]


def test_names_with_dot_segments_are_refused(fake_supabase: FakeSupabase) -> None:
    from django.core.exceptions import SuspiciousFileOperation

    with pytest.raises(SuspiciousFileOperation):
        storage_for(fake_supabase).save("u/../../etc/passwd", ContentFile(b"x"))
    assert fake_supabase.requests == []


# --- Reading, exists, delete --------------------------------------------------------------------


def test_exists_open_and_size(fake_supabase: FakeSupabase) -> None:
    storage = storage_for(fake_supabase)
    fake_supabase.put(BUCKET, "tmp/u/g/original.png", b"pixels")
    assert storage.exists("tmp/u/g/original.png")
    assert not storage.exists("tmp/u/g/missing.png")
    with storage.open("tmp/u/g/original.png") as handle:
        assert handle.read() == b"pixels"
    assert storage.size("tmp/u/g/original.png") == 6
    with pytest.raises(FileNotFoundError):
        storage.open("tmp/u/g/missing.png")
    with pytest.raises(FileNotFoundError):
        storage.size("tmp/u/g/missing.png")


def test_delete_removes_the_file_and_a_missing_file_is_not_an_error(
    fake_supabase: FakeSupabase,
) -> None:
    storage = storage_for(fake_supabase)
    fake_supabase.put(BUCKET, "u/g/a.png", b"a")
    storage.delete("u/g/a.png")
    storage.delete("u/g/a.png")
    assert fake_supabase.names() == []
    body = fake_supabase.seen("DELETE", f"/storage/v1/object/{BUCKET}")[0].json()
    assert body == {"prefixes": ["u/g/a.png"]}


def test_delete_many_deletes_in_batches(fake_supabase: FakeSupabase) -> None:
    storage = storage_for(fake_supabase)
    names = [f"u/g/{i:04d}.png" for i in range(1500)]
    for name in names:
        fake_supabase.put(BUCKET, name, b"x")
    assert storage.delete_many(names) == 1500
    assert fake_supabase.names() == []
    assert [len(r.json()["prefixes"]) for r in fake_supabase.seen("DELETE")] == [1000, 500]


# --- Listing ----------------------------------------------------------------------------------


def test_listdir_pages_past_the_first_thousand_entries(fake_supabase: FakeSupabase) -> None:
    storage = storage_for(fake_supabase)
    for i in range(2345):
        fake_supabase.put(BUCKET, f"tmp/alice/gen-{i:05d}/original.png", b"x")
    fake_supabase.put(BUCKET, "tmp/alice/stray.png", b"x")
    fake_supabase.put(BUCKET, "tmp/alice/.emptyFolderPlaceholder", b"")
    directories, files = storage.listdir("tmp/alice")
    assert len(directories) == 2345 and len(set(directories)) == 2345
    assert files == ["stray.png"]
    offsets = [
        r.json()["offset"] for r in fake_supabase.seen("POST", f"/storage/v1/object/list/{BUCKET}")
    ]
    assert offsets == [0, 1000, 2000]
    assert storage.listdir("tmp/alice/gen-00007") == ([], ["original.png"])
    assert storage.listdir("nothing/here") == ([], [])


# --- URLs -------------------------------------------------------------------------------------


def test_public_urls_are_made_locally_and_serve_the_file(fake_supabase: FakeSupabase) -> None:
    storage = storage_for(fake_supabase)
    storage.save("alice/g/youtube-thumbnail.png", file_with_content_type(b"png!", "image/png"))
    before = len(fake_supabase.requests)
    url = storage.url("alice/g/youtube-thumbnail.png")
    assert (
        url
        == f"{fake_supabase.url}/storage/v1/object/public/{BUCKET}/alice/g/youtube-thumbnail.png"
    )
    assert len(fake_supabase.requests) == before  # no request to make a public URL
    response = httpx.get(url)
    assert response.content == b"png!" and response.headers["content-type"] == "image/png"


def token_expiry(url: str) -> int:
    token = httpx.URL(url).params["token"]
    body = token.split(".")[0]
    return int(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["exp"])


def test_signed_urls_carry_the_configured_expiry_and_stop_working_after_it(
    fake_supabase: FakeSupabase,
) -> None:
    storage = storage_for(fake_supabase, signed_urls=True, signed_url_expires_seconds=3600)
    storage.save("alice/g/a.png", ContentFile(b"secret"))
    url = storage.url("alice/g/a.png")
    sign_request = fake_supabase.seen("POST", f"/storage/v1/object/sign/{BUCKET}/alice/g/a.png")[0]
    assert int(sign_request.json()["expiresIn"]) == 3600
    assert abs(token_expiry(url) - (time.time() + 3600)) < 30
    assert httpx.get(url).content == b"secret"

    short = storage_for(fake_supabase, signed_urls=True, signed_url_expires_seconds=1).url(
        "alice/g/a.png"
    )
    time.sleep(2.1)
    expired = httpx.get(short)
    assert expired.status_code == 400 and "expired" in expired.json()["message"]


# --- Errors -----------------------------------------------------------------------------------


def test_a_503_is_transient(fake_supabase: FakeSupabase) -> None:
    fake_supabase.fail("POST", "/twitter-post.png", status=503)
    with pytest.raises(TransientError, match="503"):
        storage_for(fake_supabase).save("u/g/twitter-post.png", ContentFile(b"x"))


def test_a_429_is_transient_with_retry_after(fake_supabase: FakeSupabase) -> None:
    fake_supabase.fail_json(
        "POST",
        "/object/list/",
        status=429,
        error="SlowDown",
        message="Please reduce your request rate",
        headers={"Retry-After": "4"},
    )
    with pytest.raises(TransientError) as caught:
        storage_for(fake_supabase).listdir("u")
    assert caught.value.retry_after == 4.0


def test_a_timeout_is_transient(fake_supabase: FakeSupabase) -> None:
    fake_supabase.fail("GET", "/object/info/", status=200, delay=3)
    with pytest.raises(TransientError, match="in time"):
        storage_for(fake_supabase, timeout_seconds=1).exists("u/g/a.png")


def test_an_unreachable_server_is_transient() -> None:
    storage = SupabaseStorage(
        url=f"http://127.0.0.1:{free_port()}", service_key=SERVICE_KEY, bucket=BUCKET
    )
    with pytest.raises(TransientError, match="Could not reach"):
        storage.save("u/g/a.png", ContentFile(b"x"))


def test_a_wrong_key_is_permanent_and_the_reason_does_not_show_it(
    fake_supabase: FakeSupabase,
) -> None:
    with pytest.raises(PermanentError) as caught:
        storage_for(fake_supabase, service_key="wrong-secret-key-4242").save(
            "u/g/a.png", ContentFile(b"x")
        )
    assert "403" in caught.value.message
    assert "4242" not in caught.value.message and SERVICE_KEY not in caught.value.message


def test_a_missing_bucket_is_permanent(fake_supabase: FakeSupabase) -> None:
    with pytest.raises(PermanentError, match="Bucket not found"):
        storage_for(fake_supabase, bucket="no-such-bucket").save("u/g/a.png", ContentFile(b"x"))


def test_default_storage_goes_through_supabase_when_configured(
    use_fake_supabase: FakeSupabase,
) -> None:
    name = default_storage.save("u/g/x.png", ContentFile(b"x"))
    assert use_fake_supabase.names() == [name]
    assert isinstance(default_storage._wrapped, SupabaseStorage)
