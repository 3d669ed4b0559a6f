"""The SSRF guard: a webhook never reaches a private, loopback, link-local, multicast,
reserved or unspecified address (IPv4 or IPv6, IPv4 inside IPv6 too) unless
WEBHOOK_ALLOWED_HOSTS names it.

A URL is checked when it is submitted and again before every attempt, against the addresses
its host resolves to then; the attempt connects to the address that was checked
(``pinned_request``), never resolving the name a second time, so a DNS answer that changes
between the check and the connection (rebinding) cannot slip a private address in.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

# IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64, RFC 6052 and 8215):
# the IPv4 address is what the packet reaches.
_NAT64_PREFIXES = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class TargetError(Exception):
    """A URL a webhook may not be sent to; the message says why, for the API and the admin."""


class InvalidTarget(TargetError):
    """Not an http(s) URL with a host, or its host does not resolve."""


class ForbiddenTarget(TargetError):
    """The URL's host is (or resolves to) an address the guard refuses."""


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str  # a name, or an IP address without brackets
    port: int
    address: str  # the checked address the request connects to

    @property
    def host_is_address(self) -> bool:
        return _parse_address(self.host) is not None


def _parse_address(value: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address
    if any(address in prefix for prefix in _NAT64_PREFIXES):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    # IPv4-compatible (::a.b.c.d, deprecated): still routed as IPv4 by some stacks.
    if int(address) >> 32 == 0 and int(address) > 0xFFFF:
        return ipaddress.IPv4Address(int(address))
    return None


def forbidden_reason(address: IPAddress) -> str | None:
    """Why a webhook may not go to ``address`` (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = forbidden_reason(embedded)
            return f"{reason} (IPv4 {embedded} inside IPv6)" if reason else None
    # Order matters: the most telling name first (127.0.0.1 is private and loopback).
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        # Shared (CGNAT 100.64/10), documentation, benchmarking...: not on the internet.
        ("non-global", not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


@dataclass(frozen=True)
class AllowList:
    """WEBHOOK_ALLOWED_HOSTS: host names, addresses and networks (CIDR)."""

    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            entry = entry.strip().strip("[]").lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.rstrip("."))
        return cls(hosts=frozenset(hosts), networks=tuple(networks))

    def names(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def covers(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system's resolver, as a connection would)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise InvalidTarget(f"The host {host!r} does not resolve ({exc}).") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise InvalidTarget(f"The host {host!r} does not resolve.")
    return addresses


def check_url(
    url: str,
    *,
    allowed_hosts: Iterable[str] | None = None,
    allow_http: bool | None = None,
    resolver: Resolver | None = None,
) -> Target:
    """The target of ``url`` with the address to connect to, or TargetError saying why not.

    Every address the host resolves to must be allowed (a name answering one public and one
    private address is refused): public, or named in WEBHOOK_ALLOWED_HOSTS by host name,
    address or network. Plain http needs WEBHOOK_ALLOW_HTTP or an allowed-listed host.
    """
    allow = AllowList.parse(
        settings.WEBHOOK_ALLOWED_HOSTS if allowed_hosts is None else allowed_hosts
    )
    allow_http = settings.WEBHOOK_ALLOW_HTTP if allow_http is None else allow_http
    resolve = resolver or system_resolver

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidTarget(f"Not a valid URL ({exc}).") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise InvalidTarget("Only https:// (or http://) URLs are accepted.")
    host = parts.hostname or ""
    if not host:
        raise InvalidTarget("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise InvalidTarget("Credentials in the URL are not accepted; verify the signature.")
    port = port or (443 if scheme == "https" else 80)

    literal = _parse_address(host)
    addresses = [host] if literal is not None else resolve(host, port)
    named = allow.names(host)
    parsed: list[IPAddress] = []
    for text in addresses:
        address = _parse_address(text)
        if address is None:
            raise InvalidTarget(f"The host {host!r} resolved to {text!r}, not an address.")
        parsed.append(address)
        reason = forbidden_reason(address)
        if reason and not (named or allow.covers(address)):
            shown = host if literal is not None else f"{host} resolves to {text}, which"
            raise ForbiddenTarget(
                f"{shown} is a {reason} address; webhooks go to public addresses only "
                "(operators may allow a host with WEBHOOK_ALLOWED_HOSTS)."
            )
    if scheme == "http" and not allow_http:
        listed = named or all(allow.covers(address) for address in parsed)
        if not listed:
            raise InvalidTarget("Only https:// URLs are accepted.")
    return Target(url=url, scheme=scheme, host=host, port=port, address=str(parsed[0]))


def pinned_request(target: Target) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL, headers and httpx extensions of a request that connects to
    ``target.address`` while speaking to ``target.host``: the `Host` header and, for https,
    TLS SNI and certificate verification keep the name; only the TCP connection uses the
    checked address."""
    parts = urlsplit(target.url)
    address = _parse_address(target.address)
    shown = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    netloc = f"{shown}:{target.port}"
    url = parts._replace(netloc=netloc, fragment="").geturl()
    default_port = 443 if target.scheme == "https" else 80
    host_header = f"[{target.host}]" if ":" in target.host else target.host
    if target.port != default_port:
        host_header = f"{host_header}:{target.port}"
    extensions: dict[str, Any] = {}
    if target.scheme == "https" and not target.host_is_address:
        extensions["sni_hostname"] = target.host
    return url, {"Host": host_header}, extensions
