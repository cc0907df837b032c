"""Outbound HTTP to addresses users type in (webhooks, Slack), safe against SSRF.

Every request goes through `post`, for the "send test message" button as much as for real sends:

1. The URL must be http(s) with a host. A host that ends in a number is an IPv4 address in one of the
   spellings URL parsers and resolvers accept (`127.1`, `2130706433`, `0177.0.0.1`, `0x7f.0.0.1`,
   `127.000.000.001`); it is rewritten to its dotted-quad form (WHATWG URL's IPv4 parser), and the
   rewritten URL is the one checked, stored and sent to. One that is no address at all is refused.
2. The host is resolved once; the request is refused if ANY resolved address is not public
   (private, loopback, link-local, multicast, reserved, unspecified, shared/CGNAT, or one of those
   wrapped in IPv6: IPv4-mapped `::ffff:a.b.c.d`, NAT64, 6to4) unless the allow-list admits it.
3. The connection goes to the vetted IP itself, while the Host header and the TLS SNI/certificate
   check keep the original hostname. A second DNS answer (DNS rebinding) is therefore never used.
4. Redirects are never followed: the 3xx comes back to the caller, who treats it as a failure.
   Proxies from the environment are ignored, since a proxy would resolve the name again.
5. Timeouts are bounded, and at most `MAX_BODY_BYTES` of the answer are read.

`post` is a coroutine on aiohttp (its C parser costs about a quarter of httpx's CPU per request); sync
callers (Celery tasks, sync routes) run coroutines through `run`, on one event loop per process, so
keep-alive connections outlive each call.

Known limit: `socket.getaddrinfo` has no timeout of its own; the system resolver's (resolv.conf) applies.
"""

from __future__ import annotations

import asyncio
import atexit
import ipaddress
import os
import socket
import ssl
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, TypeVar

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDictProxy
from yarl import URL

from shared.core.errors import InvalidParameter

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]
T = TypeVar("T")

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

    @cached_property
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
    url: URL
    # The vetted address the connection will use, whatever DNS says later.
    ip: IPAddress


@dataclass(frozen=True)
class OutboundResponse:
    status_code: int
    # Case-insensitive.
    headers: CIMultiDictProxy[str]
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


# The name of the setting that admits non-public addresses, for messages that tell people what to change.
ALLOWLIST_SETTING = "TESSERA_OUTBOUND_ALLOWLIST"


_IPV4_DIGITS = {10: "0123456789", 8: "01234567", 16: "0123456789abcdef"}


def _ipv4_number(part: str) -> int | None:
    """One dot-separated part of a WHATWG IPv4 host: decimal, 0x-hex or 0-prefixed octal; None if not."""
    base, digits = 10, part.lower()
    if digits.startswith("0x"):
        base, digits = 16, digits[2:]
    elif len(digits) > 1 and digits.startswith("0"):
        base, digits = 8, digits[1:]
    if any(char not in _IPV4_DIGITS[base] for char in digits):
        return None
    return int(digits, base) if digits else 0


@lru_cache(maxsize=1024)
def canonical_host(host: str) -> str:
    """The host with any numeric IPv4 spelling rewritten to dotted-quad; other hosts are returned as
    they are. OutboundRefused for a host that ends in a number but is no IPv4 address ("1.2.3.256").
    Cached: every send vets its destination, and destinations are few."""
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if not parts[-1] or _ipv4_number(parts[-1]) is None:
        return host  # a name (or an IPv6 literal): resolved or parsed later
    numbers = [_ipv4_number(part) if part else None for part in parts]
    if len(numbers) > 4 or None in numbers:
        raise OutboundRefused(f"{host!r} is not a valid IPv4 address")
    *leading, final = [number for number in numbers if number is not None]
    if any(number > 255 for number in leading) or final >= 256 ** (5 - len(numbers)):
        raise OutboundRefused(f"{host!r} is not a valid IPv4 address")
    return str(ipaddress.IPv4Address(final + sum(number << (8 * (3 - i)) for i, number in enumerate(leading))))


def parse_url(url: str | URL) -> URL:
    """The URL as requests are made with it (IPv4 host in canonical form); OutboundRefused unless
    http(s) with a host."""
    try:
        # The very object the request is made with: no second parser can read another host from the text.
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise OutboundRefused(f"invalid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise OutboundRefused(f"scheme {parsed.scheme!r} is not allowed, use http or https")
    if not parsed.raw_host or not parsed.raw_host.rstrip("."):
        raise OutboundRefused("URL has no host")
    host = canonical_host(parsed.raw_host)
    return parsed if host == parsed.raw_host else parsed.with_host(host)


def _host_and_port(parsed: URL) -> tuple[str, int]:
    # yarl types both as optional; an http(s) URL that `parse_url` accepted has both.
    host, port = parsed.raw_host, parsed.port
    assert host is not None and port is not None
    return host, port


def vet_destination(url: str | URL, policy: OutboundPolicy) -> PinnedDestination:
    """Resolve the URL's host once and check every address; the result says which IP to connect to."""
    parsed = parse_url(url)
    return PinnedDestination(url=parsed, ip=vet_host(*_host_and_port(parsed), policy))


def vet_host(host: str, port: int, policy: OutboundPolicy) -> IPAddress:
    """Resolve `host` once and check every address (also for non-HTTP protocols such as SMTP);
    returns the address to connect to."""
    host = canonical_host(host.lower()).rstrip(".")
    try:
        # A scope suffix ("fe80::1%eth0") is not part of the address; an IP literal needs no lookup.
        resolved = [host] if _is_ip_literal(host) else policy.resolver(host, port)
        addresses = tuple(_address(address.split("%")[0]) for address in resolved)
    except (OSError, UnicodeError) as exc:
        raise ResolutionFailed(f"cannot resolve {host}: {exc}") from None
    if not addresses:
        raise ResolutionFailed(f"{host} resolved to no address")

    networks, hostnames = policy.split_allowlist
    if host not in hostnames:
        for address in addresses:
            if not is_public_address(address) and not _is_allowlisted(address, networks):
                where = str(address) if str(address) == host else f"{host} resolves to {address}, which"
                raise OutboundRefused(f"{where} is not a public address; add it to {ALLOWLIST_SETTING} to allow it")

    # A mapped address reaches its IPv4 host; connect to that directly (no dual-stack socket needed).
    ip = addresses[0]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip


@lru_cache(maxsize=1024)
def _address(text: str) -> IPAddress:
    # Parsing is pure Python (microseconds) and every send parses its destination: addresses repeat.
    return ipaddress.ip_address(text)


def _is_ip_literal(host: str) -> bool:
    try:
        _address(host)
    except ValueError:
        return False
    return True


async def post(
    url: str,
    *,
    content: bytes,
    headers: Mapping[str, str],
    policy: OutboundPolicy,
) -> OutboundResponse:
    """POST `content` to `url` through the vetted, pinned IP.

    Raises OutboundRefused for a forbidden destination, ResolutionFailed when DNS has no answer,
    TimeoutError when the receiver does not answer in time, aiohttp.ClientError when it cannot be reached
    (a rejected TLS certificate is an ssl.SSLCertVerificationError among its causes).
    A 3xx is returned, not followed.
    """
    parsed = parse_url(url)
    host, port = _host_and_port(parsed)
    if _is_ip_literal(host):
        ip = vet_host(host, port, policy)
        # Mapped IPv6 literals reach their IPv4 host directly (no dual-stack socket needed).
        target = parsed.with_host(str(ip))
    else:
        # getaddrinfo blocks: off the loop, or every other send waits for this lookup.
        ip = await asyncio.to_thread(vet_host, host, port, policy)
        # The name stays in the URL: TLS checks the certificate for it and sends it as SNI, while the
        # connector's resolver hands out only the vetted IP.
        target = parsed
    request_headers = {key: value for key, value in headers.items() if key.lower() not in ("host", "accept-encoding")}
    host_header = parsed.host_port_subcomponent
    assert host_header is not None  # a URL with a host
    request_headers["Host"] = host_header
    # Raw bytes are capped below; a compressed answer could inflate far beyond the cap in one chunk.
    request_headers["Accept-Encoding"] = "identity"

    timeout_seconds = min(policy.timeout_seconds, MAX_TIMEOUT_SECONDS)
    timeout = aiohttp.ClientTimeout(total=timeout_seconds, sock_connect=min(CONNECT_TIMEOUT_SECONDS, timeout_seconds))
    started = time.monotonic()
    pool = await _pool_for(parsed, ip, policy.verify)
    pool.users += 1
    try:
        async with pool.session.post(
            target, data=content, headers=request_headers, timeout=timeout, allow_redirects=False
        ) as response:
            body = bytearray()
            try:
                while len(body) < MAX_BODY_BYTES:
                    chunk = await response.content.read(MAX_BODY_BYTES - len(body))
                    if not chunk:
                        break
                    body.extend(chunk)
            except TimeoutError:
                # A receiver trickling bytes must not hold the worker past the overall budget: what came in
                # time is the answer. One silent after its headers has timed out.
                if not body:
                    raise
            # Leaving the block keeps a connection read to its end in the pool and closes one cut short.
    finally:
        pool.users -= 1
        if pool.evicted and not pool.users:
            await pool.session.close()
    return OutboundResponse(
        status_code=response.status,
        headers=response.headers,
        body=bytes(body),
        elapsed_ms=(time.monotonic() - started) * 1000,
    )


class _PinnedResolver(AbstractResolver):
    """The connector's DNS: the vetted address for the vetted name, nothing else, never a lookup."""

    def __init__(self, host: str, ip: IPAddress) -> None:
        self.host = host.rstrip(".")
        self.answer = ResolveResult(
            hostname=self.host,
            host=str(ip),
            port=0,
            family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
            proto=0,
            flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
        )

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host.rstrip(".") != self.host:
            raise OSError(f"{host} was not vetted")
        return [ResolveResult({**self.answer, "port": port})]

    async def close(self) -> None:
        pass


@dataclass(eq=False)
class _Pool:
    session: aiohttp.ClientSession
    # Requests under way; an evicted pool is closed when the last one ends.
    users: int = 0
    evicted: bool = False


# Keep-alive pools, one per (event loop, scheme, host name, vetted IP, port, TLS trust): a pool shared
# between host names on one IP could hand a connection made (and certificate-checked) for one name to a
# request for another, and an aiohttp session belongs to the loop it was made in. Reusing connections
# saves a TCP (and TLS) handshake per delivery, about half of a webhook's sending cost.
_MAX_POOLS = 64
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OrderedDict[tuple, _Pool]] = weakref.WeakKeyDictionary()


async def _pool_for(url: URL, ip: IPAddress, verify: ssl.SSLContext | bool) -> _Pool:
    pools = _pools.setdefault(asyncio.get_running_loop(), OrderedDict())
    key = (url.scheme, url.raw_host, ip, url.port, verify)
    pool = pools.get(key)
    if pool is not None:
        pools.move_to_end(key)
        return pool
    pool = pools[key] = _Pool(
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                resolver=_PinnedResolver(_host_and_port(url)[0], ip),
                ssl=verify,
                limit=32,
                # Below the 5 s many servers allow, so we rarely reuse a connection they are closing.
                keepalive_timeout=4.0,
            ),
            # Proxies from the environment would resolve the name again.
            trust_env=False,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
    )
    while len(pools) > _MAX_POOLS:
        _, oldest = pools.popitem(last=False)
        oldest.evicted = True
        if not oldest.users:
            await oldest.session.close()
    return pool


# --- One event loop per process for sync callers ---------------------------------------------------

# Concurrent blocking calls the loop hands to threads (DNS lookups, SMTP sends).
_LOOP_THREADS = 32


class _LoopThread:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(ThreadPoolExecutor(_LOOP_THREADS, thread_name_prefix="outbound"))
        threading.Thread(target=self.loop.run_forever, name="outbound-loop", daemon=True).start()
        atexit.register(self.close)

    def close(self) -> None:
        """Close the pools (politely, and without aiohttp's warnings about unclosed sessions at exit)."""
        if self.pid != os.getpid():
            return

        async def close_pools() -> None:
            for pool in _pools.pop(self.loop, {}).values():
                await pool.session.close()

        asyncio.run_coroutine_threadsafe(close_pools(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)


# By process id: a forked child (Celery's prefork pool) starts its own loop, and the parent's, copied
# into the child without its thread, stays referenced so that nothing tries to close its sockets there.
_loop_threads: dict[int, _LoopThread] = {}
_loop_threads_lock = threading.Lock()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on this process's outbound event loop (started on first use) and wait for it."""
    pid = os.getpid()
    loop_thread = _loop_threads.get(pid)
    if loop_thread is None:
        with _loop_threads_lock:
            loop_thread = _loop_threads.get(pid) or _loop_threads.setdefault(pid, _LoopThread())
    return asyncio.run_coroutine_threadsafe(coroutine, loop_thread.loop).result()
