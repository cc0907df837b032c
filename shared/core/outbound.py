"""Outbound HTTP to addresses users type in (webhooks, Slack), safe against SSRF.

Every request goes through `post`, for the "send test message" button as much as for real sends:

1. The URL must be http(s) with a host.
2. The host is resolved once; the request is refused if ANY resolved address is not public
   (private, loopback, link-local, multicast, reserved, unspecified, shared/CGNAT, or one of those
   wrapped in IPv6: IPv4-mapped `::ffff:a.b.c.d`, NAT64, 6to4) unless the allow-list admits it.
3. The connection goes to the vetted IP itself, while the Host header and the TLS SNI/certificate
   check keep the original hostname. A second DNS answer (DNS rebinding) is therefore never used.
4. Redirects are never followed: the 3xx comes back to the caller, who treats it as a failure.
   Proxies from the environment are ignored, since a proxy would resolve the name again.
5. Timeouts are bounded, and at most `MAX_BODY_BYTES` of the answer are read.

Known limit: `socket.getaddrinfo` has no timeout of its own; the system resolver's (resolv.conf) applies.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from shared.core.errors import InvalidParameter

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 5.0
# Enough for an error message from the receiver; a hostile one cannot make us buffer more.
MAX_BODY_BYTES = 16 * 1024


class OutboundRefused(InvalidParameter):
    """The destination is not allowed (bad URL, or an address that is not public). Never retry."""


class ResolutionFailed(Exception):
    """The host name did not resolve; DNS trouble is often temporary, so callers may retry."""


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # Keep the resolver's order (it prefers reachable families) but drop duplicates.
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class OutboundPolicy:
    """What may be reached and how long to wait; built from settings (`outbound_allowlist`)."""

    # IPs, CIDRs ("10.0.0.0/8") or hostnames ("hooks.internal") allowed although not public.
    allowlist: Sequence[str] = ()
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    # TLS verification: True (system CAs) or an SSLContext trusting a private CA.
    verify: ssl.SSLContext | bool = True
    # DNS lookup; replaceable only because DNS is the edge of the world in tests.
    resolver: Resolver = field(default=system_resolver)

    def split_allowlist(self) -> tuple[list[IPNetwork], set[str]]:
        """(networks, hostnames): entries that parse as an IP or CIDR are networks, the rest names."""
        networks: list[IPNetwork] = []
        hostnames: set[str] = set()
        for raw_entry in self.allowlist:
            entry = raw_entry.strip()
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hostnames.add(entry.lower().rstrip("."))
        return networks, hostnames


@dataclass(frozen=True)
class PinnedDestination:
    url: httpx.URL
    # The vetted address the connection will use, whatever DNS says later.
    ip: IPAddress


@dataclass(frozen=True)
class OutboundResponse:
    status_code: int
    headers: httpx.Headers
    # The first MAX_BODY_BYTES of the answer.
    body: bytes
    elapsed_ms: float


# NAT64's well-known prefix: the last 32 bits are the IPv4 destination.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _ipv4_destination(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 host an IPv6 address really reaches (IPv4-mapped or NAT64), if it is one of those."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(ip: IPAddress) -> bool:
    destination = _ipv4_destination(ip)
    if destination is not None:
        return is_public_address(destination)
    # 6to4 tunnels to the embedded IPv4 host (Teredo, 2001::/32, counts as private already).
    if isinstance(ip, ipaddress.IPv6Address) and ip.sixtofour is not None and not is_public_address(ip.sixtofour):
        return False
    # `is_global` alone lets multicast through, and older Pythons miss some special ranges.
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


def _is_allowlisted(ip: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    candidates = [ip]
    destination = _ipv4_destination(ip)
    if destination is not None:
        candidates.append(destination)
    return any(candidate in network for candidate in candidates for network in networks)


def vet_destination(url: str | httpx.URL, policy: OutboundPolicy) -> PinnedDestination:
    """Resolve the URL's host once and check every address; the result says which IP to connect to."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise OutboundRefused(f"invalid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise OutboundRefused(f"scheme {parsed.scheme!r} is not allowed, use http or https")
    host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    if not host:
        raise OutboundRefused("URL has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return PinnedDestination(url=parsed, ip=vet_host(host, port, policy))


def vet_host(host: str, port: int, policy: OutboundPolicy) -> IPAddress:
    """Resolve `host` once and check every address (also for non-HTTP protocols such as SMTP);
    returns the address to connect to."""
    host = host.lower().rstrip(".")
    try:
        # A scope suffix ("fe80::1%eth0") is not part of the address.
        resolved = policy.resolver(host, port)
        addresses = tuple(ipaddress.ip_address(address.split("%")[0]) for address in resolved)
    except (OSError, UnicodeError) as exc:
        raise ResolutionFailed(f"cannot resolve {host}: {exc}") from None
    if not addresses:
        raise ResolutionFailed(f"{host} resolved to no address")

    networks, hostnames = policy.split_allowlist()
    if host not in hostnames:
        for address in addresses:
            if not is_public_address(address) and not _is_allowlisted(address, networks):
                raise OutboundRefused(
                    f"{host} resolves to {address}, which is not a public address (not in the allow-list)"
                )

    # A mapped address reaches its IPv4 host; connect to that directly (no dual-stack socket needed).
    ip = addresses[0]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip


def post(
    url: str,
    *,
    content: bytes,
    headers: Mapping[str, str],
    policy: OutboundPolicy,
) -> OutboundResponse:
    """POST `content` to `url` through the vetted, pinned IP.

    Raises OutboundRefused for a forbidden destination, ResolutionFailed when DNS has no answer,
    httpx.TimeoutException / httpx.TransportError when the receiver cannot be reached in time.
    A 3xx is returned, not followed.
    """
    destination = vet_destination(url, policy)
    pinned_url = destination.url.copy_with(host=str(destination.ip))
    request_headers = {key: value for key, value in headers.items() if key.lower() not in ("host", "accept-encoding")}
    request_headers["Host"] = destination.url.netloc.decode("ascii")
    # Raw bytes are capped below; a compressed answer could inflate far beyond the cap in one chunk.
    request_headers["Accept-Encoding"] = "identity"
    extensions = {}
    if destination.url.scheme == "https":
        # Certificate and SNI are checked against the name the user configured, not the IP.
        extensions["sni_hostname"] = destination.url.raw_host.decode("ascii")

    timeout_seconds = min(policy.timeout_seconds, MAX_TIMEOUT_SECONDS)
    timeout = httpx.Timeout(timeout_seconds, connect=min(CONNECT_TIMEOUT_SECONDS, timeout_seconds))
    started = time.monotonic()
    client = _client_for(destination, policy.verify)
    request = client.build_request(
        "POST", pinned_url, content=content, headers=request_headers, extensions=extensions, timeout=timeout
    )
    response = client.send(request, stream=True)
    try:
        body = bytearray()
        for chunk in response.iter_raw():
            body.extend(chunk)
            # A receiver trickling bytes must not hold the worker past the overall budget.
            if len(body) >= MAX_BODY_BYTES or time.monotonic() - started > timeout_seconds:
                break
    finally:
        # An answer read to its end leaves its connection in the pool; one cut short closes it.
        response.close()
    return OutboundResponse(
        status_code=response.status_code,
        headers=response.headers,
        body=bytes(body[:MAX_BODY_BYTES]),
        elapsed_ms=(time.monotonic() - started) * 1000,
    )


# Keep-alive clients, one per (process, scheme, host name, vetted IP, port, TLS trust): httpx pools
# connections by the address it dials, which is the IP, so a client shared between host names on one IP
# could hand a connection made (and certificate-checked) for one name to a request for another. Reusing
# connections saves a TCP (and TLS) handshake per delivery, about half of a webhook's sending cost.
_MAX_CLIENTS = 64
_clients: OrderedDict[tuple, httpx.Client] = OrderedDict()
_clients_lock = threading.Lock()


def _client_for(destination: PinnedDestination, verify: ssl.SSLContext | bool) -> httpx.Client:
    url = destination.url
    key = (os.getpid(), url.scheme, url.raw_host, str(destination.ip), url.port, verify)
    with _clients_lock:
        client = _clients.get(key)
        if client is not None:
            _clients.move_to_end(key)
            return client
        client = httpx.Client(
            follow_redirects=False,
            trust_env=False,
            transport=httpx.HTTPTransport(
                verify=verify, retries=0, limits=httpx.Limits(max_connections=32, max_keepalive_connections=16)
            ),
        )
        _clients[key] = client
        if len(_clients) > _MAX_CLIENTS:
            # Not closed here: another thread may be mid-request on it; its connections close with it.
            _clients.popitem(last=False)
    return client
