"""API tokens are unreadable after creation: the key is shown once (the command, the admin's
add page), the database keeps a digest, tokens made before hashing keep working; in the
admin staff see what their permissions allow and only superusers manage others' credentials."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from knox.models import AuthToken
from rest_framework.authtoken.models import Token as DrfToken
from rest_framework.test import APIClient

from tests.conftest import api_key_for, make_user

TOKENS = "/admin/knox/authtoken/"
USERS = "/admin/auth/user/"


def api(key: str, keyword: str = "Token") -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {key}")
    return int(client.get("/api/jobs").status_code)


def browser_for(user: Any, *codenames: str) -> Client:
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    browser = Client()
    browser.force_login(user)
    return browser


def key_on_page(html: str) -> str:
    return html.split('<code id="api-key"', 1)[1].split(">", 1)[1].split("<", 1)[0]


@pytest.fixture
def root(db: None) -> Any:
    return get_user_model().objects.create_superuser("root", "root@example.com", "unused-pw-1")


# --- Storage ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_database_keeps_a_digest_never_the_key(alice: Any) -> None:
    key = api_key_for(alice)
    (token,) = AuthToken.objects.filter(user=alice)
    stored = " ".join(str(value) for value in vars(token).values())
    assert key not in stored
    assert len(key) == 64 and token.digest != key
    assert api(key) == 200 and api(key, "Bearer") == 200


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["0" * 64, "zz\x00zz", "é" * 10, "a b"])
def test_a_wrong_or_malformed_key_is_a_401(value: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {value}")
    response = client.get("/api/jobs")
    assert response.status_code == 401
    assert response.json()["error"]


@pytest.mark.django_db(transaction=True)
def test_drf_tokens_made_before_hashing_keep_working_after_the_migration(alice: Any) -> None:
    # Back to before core's migration 0001, with a plain-text DRF token as it was stored then.
    MigrationExecutor(connection).migrate([("core", None)])
    old_key = DrfToken.objects.create(user=alice).key
    assert len(old_key) == 40

    MigrationExecutor(connection).migrate([("core", "0001_hash_drf_tokens")])

    assert not DrfToken.objects.exists()  # the plain-text keys are gone
    (token,) = AuthToken.objects.filter(user=alice)
    assert old_key not in token.digest and token.expiry is None
    assert api(old_key) == 200
    assert api(old_key, "Bearer") == 200
    assert api(old_key[:-1] + ("0" if old_key[-1] != "0" else "1")) == 401


# --- The admin ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_staff_without_token_permissions_cannot_see_or_add_tokens(staff: Any, alice: Any) -> None:
    api_key_for(alice)
    browser = browser_for(staff)
    assert browser.get(TOKENS).status_code == 403
    assert browser.get(f"{TOKENS}add/").status_code == 403
    assert browser.post(f"{TOKENS}add/", {}).status_code == 403
    assert AuthToken.objects.count() == 1


@pytest.mark.django_db
def test_staff_with_token_permissions_manage_only_their_own(staff: Any, alice: Any) -> None:
    alice_key = api_key_for(alice)
    browser = browser_for(staff, "view_authtoken", "add_authtoken", "delete_authtoken")

    add_page = browser.get(f"{TOKENS}add/").content.decode()
    assert 'name="user"' not in add_page  # for themselves only
    created = browser.post(f"{TOKENS}add/", {"user": alice.pk})
    assert created.status_code == 200
    key = key_on_page(created.content.decode())
    assert "no-store" in created["Cache-Control"]
    assert api(key) == 200
    assert AuthToken.objects.get(digest=created.context["token"].digest).user == staff

    listing = browser.get(TOKENS).content.decode()
    assert "staff" in listing and "alice" not in listing
    alice_token = AuthToken.objects.get(user=alice)
    assert browser.get(f"{TOKENS}{alice_token.pk}/delete/").status_code == 302  # "not found"
    browser.post(f"{TOKENS}{alice_token.pk}/delete/", {"post": "yes"})
    assert api(alice_key) == 200


@pytest.mark.django_db
def test_a_superuser_manages_every_users_tokens_without_reading_any_key(
    root: Any, alice: Any
) -> None:
    old_key = api_key_for(alice)
    browser = browser_for(root)

    created = browser.post(f"{TOKENS}add/", {"user": alice.pk})
    new_key = key_on_page(created.content.decode())
    assert api(new_key) == 200
    assert created.context["token"].user == alice

    listing = browser.get(TOKENS).content.decode()
    assert listing.count("alice") >= 2
    for token in AuthToken.objects.filter(user=alice):
        page = browser.get(f"{TOKENS}{token.pk}/change/").content.decode()
        # The digest is the row's id (in its URLs): one-way, of a 256-bit random key.
        for secret in (old_key, new_key, old_key[:15], new_key[:15]):
            assert secret not in page
            assert secret not in listing
        assert 'name="_save"' not in page  # nothing to edit

    old = next(t for t in AuthToken.objects.filter(user=alice) if t.token_key == old_key[:15])
    response = browser.post(f"{TOKENS}{old.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert api(old_key) == 401
    assert api(new_key) == 200


@pytest.mark.django_db
def test_the_new_key_is_on_its_page_only(root: Any) -> None:
    browser = browser_for(root)
    created = browser.post(f"{TOKENS}add/", {"user": root.pk})
    key = key_on_page(created.content.decode())
    for path in ("/admin/", TOKENS, f"{TOKENS}{created.context['token'].pk}/change/"):
        assert key not in browser.get(path).content.decode()
    assert not browser.cookies.get("messages")


# --- Users: others' credentials are superusers' business ------------------------------------


@pytest.mark.django_db
def test_staff_who_may_change_users_cannot_touch_credentials_or_privileges(
    staff: Any, alice: Any, root: Any
) -> None:
    browser = browser_for(staff, "view_user", "change_user")
    assert browser.get(f"{USERS}{alice.pk}/password/").status_code == 403
    response = browser.post(
        f"{USERS}{alice.pk}/password/",
        {"password1": "An0ther-secret!", "password2": "An0ther-secret!"},
    )
    assert response.status_code == 403
    assert browser.get(f"{USERS}{staff.pk}/password/").status_code == 200  # their own

    listing = browser.get(USERS).content.decode()
    assert "alice" in listing and "root" not in listing
    assert browser.get(f"{USERS}{root.pk}/change/").status_code == 302  # "not found"

    page = browser.get(f"{USERS}{alice.pk}/change/").content.decode()
    for field in ("is_staff", "is_superuser", "groups", "user_permissions"):
        assert f'name="{field}"' not in page
    browser.post(
        f"{USERS}{staff.pk}/change/",
        {"username": "staff", "is_superuser": "on", "is_staff": "on", "is_active": "on",
         "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"},
    )  # fmt: skip
    staff.refresh_from_db()
    assert not staff.is_superuser


@pytest.mark.django_db
def test_a_superuser_may_set_another_users_password(root: Any, alice: Any) -> None:
    browser = browser_for(root)
    response = browser.post(
        f"{USERS}{alice.pk}/password/",
        {"password1": "An0ther-secret!", "password2": "An0ther-secret!"},
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password("An0ther-secret!")


def test_tokens_for_new_users_can_be_made(db: None) -> None:
    assert api(api_key_for(make_user("dora"))) == 200
