"""The SSRF guard: webhooks reach public addresses only, unless WEBHOOK_ALLOWED_HOSTS names a
host; the address checked is the address connected to."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

import pytest

from jobs.webhooks import services, ssrf
from tests.jobs.webhooks.receiver import running_receiver

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"


def resolving_to(*answers: list[str]) -> Callable[[str, int], list[str]]:
    """A resolver answering each call with the next list (the last one repeats)."""
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return answers[min(len(calls), len(answers)) - 1]

    return resolve


def check(url: str, *, allowed: list[str] | None = None, **kwargs: object) -> ssrf.Target:
    return ssrf.check_url(url, allowed_hosts=allowed or [], allow_http=False, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-global"),  # shared address space (carrier-grade NAT)
        ("192.0.2.10", "private"),  # documentation
        ("255.255.255.255", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "private"),  # documentation
        ("::ffff:127.0.0.1", "loopback (IPv4 127.0.0.1 inside IPv6)"),
        ("::ffff:10.0.0.1", "private (IPv4 10.0.0.1 inside IPv6)"),
        ("::ffff:169.254.169.254", "link-local (IPv4 169.254.169.254 inside IPv6)"),
        ("64:ff9b::a00:1", "private (IPv4 10.0.0.1 inside IPv6)"),  # NAT64
        ("2002:7f00:1::", "loopback (IPv4 127.0.0.1 inside IPv6)"),  # 6to4
        ("::127.0.0.1", "loopback (IPv4 127.0.0.1 inside IPv6)"),  # IPv4-compatible
    ],
)
def test_every_non_public_range_is_refused_as_a_literal_and_through_dns(
    address: str, reason: str
) -> None:
    shown = f"[{address}]" if ":" in address else address
    with pytest.raises(ssrf.ForbiddenTarget, match=re.escape(f"is a {reason} address")):
        check(f"https://{shown}/hook")
    with pytest.raises(ssrf.ForbiddenTarget, match=re.escape(f"resolves to {address}, which is a")):
        check("https://hooks.example.com/hook", resolver=resolving_to([address]))


@pytest.mark.parametrize("address", [PUBLIC_V4, PUBLIC_V6, f"::ffff:{PUBLIC_V4}"])
def test_public_addresses_are_accepted_and_become_the_address_to_connect_to(address: str) -> None:
    target = check("https://hooks.example.com:8443/hook?x=1", resolver=resolving_to([address]))
    assert (target.host, target.port) == ("hooks.example.com", 8443)
    assert ipaddress.ip_address(target.address) == ipaddress.ip_address(address)


def test_a_name_with_one_private_answer_among_public_ones_is_refused() -> None:
    with pytest.raises(ssrf.ForbiddenTarget, match="resolves to 10.0.0.7"):
        check("https://hooks.example.com/", resolver=resolving_to([PUBLIC_V4, "10.0.0.7"]))


@pytest.mark.parametrize(
    "allowed",
    [["127.0.0.1"], ["127.0.0.0/8"], ["receiver.internal"], ["RECEIVER.internal."]],
)
def test_allowed_hosts_lift_the_guard_by_address_network_or_name(allowed: list[str]) -> None:
    target = check(
        "https://receiver.internal/hook", allowed=allowed, resolver=resolving_to(["127.0.0.1"])
    )
    assert target.address == "127.0.0.1"
    assert check("https://127.0.0.1:9000/", allowed=["127.0.0.1", "127.0.0.0/8"]).port == 9000


def test_allowed_hosts_name_only_what_they_name() -> None:
    with pytest.raises(ssrf.ForbiddenTarget):
        check("https://10.0.0.1/", allowed=["127.0.0.1", "receiver.internal", "192.168.0.0/16"])
    with pytest.raises(ssrf.ForbiddenTarget):
        check("https://other.internal/", allowed=["receiver.internal"],
              resolver=resolving_to(["127.0.0.1"]))  # fmt: skip
    with pytest.raises(ssrf.ForbiddenTarget):
        check("https://[::1]/", allowed=["127.0.0.1"])


def test_the_settings_are_the_default(settings: object) -> None:
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]  # type: ignore[attr-defined]
    settings.WEBHOOK_ALLOW_HTTP = False  # type: ignore[attr-defined]
    assert ssrf.check_url("http://127.0.0.1:8080/x").address == "127.0.0.1"
    with pytest.raises(ssrf.InvalidTarget, match="Only https"):
        ssrf.check_url(f"http://{PUBLIC_V4}/x")
    settings.WEBHOOK_ALLOWED_HOSTS = []  # type: ignore[attr-defined]
    with pytest.raises(ssrf.ForbiddenTarget):
        ssrf.check_url("https://127.0.0.1:8080/x")


def test_plain_http_needs_allow_http_or_an_allowed_host() -> None:
    with pytest.raises(ssrf.InvalidTarget, match="Only https:// URLs"):
        check(f"http://{PUBLIC_V4}/hook")
    assert ssrf.check_url(f"http://{PUBLIC_V4}/hook", allowed_hosts=[], allow_http=True)
    assert check("http://127.0.0.1/hook", allowed=["127.0.0.1"]).port == 80


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example.com/x", "Only https:// (or http://) URLs"),
        ("javascript:alert(1)", "Only https:// (or http://) URLs"),
        ("hooks.example.com/x", "Only https:// (or http://) URLs"),
        ("https:///x", "no host"),
        ("https://user:pw@hooks.example.com/x", "Credentials in the URL"),
        ("https://hooks.example.com:99999/x", "Not a valid URL"),
        ("https://[::1/x", "Not a valid URL"),
        ("https://no-such-host.invalid/x", "does not resolve"),
    ],
)
def test_urls_that_are_not_http_targets_are_invalid(url: str, message: str) -> None:
    with pytest.raises(ssrf.InvalidTarget, match=re.escape(message)):
        ssrf.check_url(url, allowed_hosts=[], allow_http=False)


def test_dns_rebinding_is_caught_by_the_check_before_each_attempt() -> None:
    """The name answered a public address at submission and a private one later: the
    later check refuses it."""
    resolve = resolving_to([PUBLIC_V4], ["127.0.0.1"])
    assert check("https://rebind.example.com/", resolver=resolve).address == PUBLIC_V4
    with pytest.raises(ssrf.ForbiddenTarget, match="resolves to 127.0.0.1"):
        check("https://rebind.example.com/", resolver=resolve)


def test_the_request_connects_to_the_checked_address_without_resolving_again() -> None:
    """A name that resolves nowhere is reached at the address that was checked; it travels
    in the Host header only."""
    with running_receiver([204], secret=lambda: "whsec_" + "A" * 44) as receiver:
        port = int(receiver.url.split(":")[2].split("/")[0])
        target = ssrf.Target(
            url=f"http://hooks.invalid:{port}/hook?a=1#frag",
            scheme="http",
            host="hooks.invalid",
            port=port,
            address="127.0.0.1",
        )
        outcome = services.post(target, body=b"{}", headers={})
    assert outcome.status_code == 401  # reached; unsigned, so the receiver refused it
    assert receiver.requests[0].headers["host"] == f"hooks.invalid:{port}"


def test_https_requests_keep_the_name_for_sni_and_certificate_checks() -> None:
    target = ssrf.Target(
        url="https://hooks.example.com/hook", scheme="https", host="hooks.example.com",
        port=443, address=PUBLIC_V6,
    )  # fmt: skip
    url, headers, extensions = ssrf.pinned_request(target)
    assert url == f"https://[{PUBLIC_V6}]:443/hook"
    assert headers == {"Host": "hooks.example.com"}
    assert extensions == {"sni_hostname": "hooks.example.com"}
