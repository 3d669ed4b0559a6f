"""The web page as Django serves it: sign in, the form, session auth with CSRF on the API."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from jobs.platforms import PLATFORMS

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


def test_the_page_sends_a_signed_out_visitor_to_sign_in() -> None:
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_signing_in_with_a_password_opens_the_page(alice: Any) -> None:
    alice.set_password(PASSWORD)
    alice.save()
    client = Client()
    assert client.get("/accounts/login/").status_code == 200
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": PASSWORD, "next": "/"}
    )
    assert response.status_code == 302 and response["Location"] == "/"

    page = client.get("/")
    assert page.status_code == 200
    html = page.content.decode()
    for platform in PLATFORMS.values():
        assert platform.name in html
        assert f"{platform.width} × {platform.height}" in html
    assert 'name="csrf-token"' in html
    assert "Live queue" not in html  # staff only


def test_a_wrong_password_shows_an_error_and_no_session(alice: Any) -> None:
    alice.set_password(PASSWORD)
    alice.save()
    client = Client()
    response = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert 'role="alert"' in response.content.decode()
    assert client.get("/").status_code == 302


def test_staff_see_the_live_queue_panel(staff: Any) -> None:
    client = Client()
    client.force_login(staff)
    assert "Live queue" in client.get("/").content.decode()


def test_the_form_offers_reuse_of_an_identical_picture_unless_reuse_is_off(
    alice: Any, settings: Any
) -> None:
    client = Client()
    client.force_login(alice)
    html = client.get("/").content.decode()
    assert 'name="reuse"' in html and "within 24 h" in html
    assert 'name="reuse" value="true">' in html  # unchecked: reuse is opt-in

    settings.GENERATION_REUSE_DEFAULT = True
    assert 'name="reuse" value="true" checked>' in client.get("/").content.decode()
    settings.REUSE_WINDOW_HOURS = 0
    assert 'name="reuse"' not in client.get("/").content.decode()


def test_signing_out_ends_the_session(alice: Any) -> None:
    client = Client()
    client.force_login(alice)
    response = client.post("/accounts/logout/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert client.get("/").status_code == 302


def test_the_api_under_a_session_requires_the_csrf_header(alice: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    page = client.get("/")
    token = page.cookies["csrftoken"].value

    refused = client.post(
        "/api/jobs/generate", {"prompt": "A fox"}, content_type="application/json"
    )
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["error"]

    accepted = client.post(
        "/api/jobs/generate",
        {"prompt": "A fox"},
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert accepted.status_code == 202


def test_the_static_files_of_the_page_are_found() -> None:
    from django.contrib.staticfiles import finders

    for name in ("jobs/app.js", "jobs/app.css", "jobs/icon.svg"):
        assert finders.find(name), name
