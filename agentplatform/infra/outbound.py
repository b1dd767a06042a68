"""Requests to URLs that tenants give the platform (webhooks, HTTP tools, MCP servers).

A tenant's URL must not become a way into the platform's own network (SSRF). So every request
goes through `request`, which:
- takes only http and https URLs, without credentials in them;
- resolves the host name once and refuses it if *any* of its addresses is not a public
  unicast address (loopback, private, link-local, CGNAT, multicast, reserved, documentation,
  benchmarking, cloud metadata, and the IPv4-mapped, 6to4 and NAT64 forms of those);
- connects to the very address it checked: the URL is rewritten to the IP, with the name in
  the Host header and as the TLS server name (certificates are still verified against the
  name), so a second lookup cannot answer differently (DNS rebinding);
- follows redirects only when the caller allows them, checking each hop the same way;
- bounds the time and the size of the response, and ignores proxy variables.

Libraries that make their own requests (the MCP SDK) get `pinned_async_client` instead: an
async client bound to one tenant URL whose every request goes to the address checked for it.

Exceptions to the address rules come only from the deployment: `OUTBOUND_ALLOWED_NETWORKS`
(CIDRs and/or host names), for self-hosted set-ups and for the test suite's loopback servers.
Error messages are safe to show the tenant: they never name an address the platform resolved.
"""

from __future__ import annotations

import concurrent.futures
import email.utils
import functools
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urljoin

import httpx
import httpx2
from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = ("http", "https")
MAX_URL_LENGTH = 2048
MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Headers that must not follow a redirect to another origin.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_HOST_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.?)+$")

# Refused on top of what `is_global` already leaves out: ranges Python counts as global
# although no tenant server lives there, and cloud metadata services on public addresses.
_ALSO_REFUSED = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "100.64.0.0/10",  # CGNAT (also Alibaba Cloud's metadata at 100.100.100.200)
        "192.0.0.0/24",  # IETF protocol assignments (Python counts a few as global)
        "192.88.99.0/24",  # the deprecated 6to4 relay anycast
        "168.63.129.16/32",  # Azure's wire server
        "169.254.0.0/16",  # link-local: AWS, GCP, Azure, OpenStack metadata
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "64:ff9b:1::/48",  # local-use NAT64
        "fd00:ec2::/32",  # AWS's IPv6 metadata (fd00:ec2::254) and DNS
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundError(Exception):
    """A request to a tenant's URL did not produce a response. The message is safe to show
    the tenant (it names no address the platform resolved)."""

    retryable = False


class OutboundRefused(OutboundError):
    """The URL's scheme or address is not allowed. Trying again will not help."""


class OutboundFailed(OutboundError):
    """Could not connect, timed out, or the response was too large: may work later.
    `status` is the response's status when one arrived (a response over the size limit)."""

    retryable = True

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class OutboundResponse:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    elapsed: float  # seconds, the whole exchange (every redirect hop included)
    url: str  # the URL that answered (the last hop)


@dataclass(frozen=True)
class _Target:
    url: httpx.URL
    host: str  # ASCII (IDNA) host name or IP literal, without brackets
    addresses: tuple[str, ...]  # checked, in the resolver's order


# --- the address rules --------------------------------------------------------------------


@dataclass(frozen=True)
class _Allowlist:
    networks: tuple[IPNetwork, ...]
    hosts: frozenset[str]


@functools.cache
def _allowlist(entries: tuple[str, ...]) -> _Allowlist:
    networks: list[IPNetwork] = []
    hosts: set[str] = set()
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            hosts.add(entry.lower().rstrip("."))
    return _Allowlist(tuple(networks), frozenset(hosts))


def _allowed() -> _Allowlist:
    # Read on every call (a tuple of the setting caches the parse), so tests can override it.
    return _allowlist(tuple(settings.OUTBOUND_ALLOWED_NETWORKS))


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _public(address: IPAddress) -> bool:
    if any(address in net for net in _ALSO_REFUSED if net.version == address.version):
        return False
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_unspecified
    )


def _listed(address: IPAddress) -> bool:
    return any(
        address in network for network in _allowed().networks if network.version == address.version
    )


def address_allowed(address: IPAddress) -> bool:
    """Whether the platform may connect to `address`: a public unicast address, or one the
    deployment allows. IPv6 forms of an IPv4 address are judged by the IPv4 address."""
    embedded = _embedded_ipv4(address)
    if _listed(address) or (embedded is not None and _listed(embedded)):
        return True
    if embedded is None:
        return _public(address)
    # Mapped and NAT64 addresses are only a route to the IPv4 one; a 6to4 one is both.
    sixtofour = isinstance(address, ipaddress.IPv6Address) and address.sixtofour is not None
    return _public(embedded) and (not sixtofour or _public(address))


# --- URLs ---------------------------------------------------------------------------------


def _parse(url: str) -> tuple[httpx.URL, str]:
    if len(url) > MAX_URL_LENGTH:
        raise OutboundRefused(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, UnicodeError):
        raise OutboundRefused("The URL is malformed.") from None
    if parsed.scheme not in SCHEMES:
        raise OutboundRefused("The URL must start with http:// or https://.")
    if parsed.userinfo:
        raise OutboundRefused("The URL must not contain credentials (user:password@).")
    host = parsed.raw_host.decode("ascii").lower().strip("[]")
    if not host:
        raise OutboundRefused("The URL has no host.")
    return parsed, host


def url_host(url: str) -> str:
    """The host of a URL, for logs and audit records (a path or query may hold a token)."""
    try:
        return _parse(url)[1]
    except OutboundRefused:
        return ""


def _literal(host: str) -> IPAddress | None:
    """The address a host that is an IP literal names, in any form the resolver takes
    (also the legacy IPv4 ones: `127.1`, `0x7f.1`, `2130706433`, `0`)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def url_check(url: str) -> str:
    """Check a URL when a tenant saves it: the scheme, the form, and the host when it is an
    IP literal or a loopback name. Names are resolved and checked again on every request
    (what a name points to can change). Raises OutboundRefused; returns the URL."""
    _, host = _parse(url)
    if host.rstrip(".") in _allowed().hosts:
        return url
    literal = _literal(host)
    if literal is not None:
        if not address_allowed(literal):
            raise OutboundRefused(f"{host} is not a public address.")
        return url
    if not _HOST_NAME.match(host):
        raise OutboundRefused("The URL's host is not a valid host name.")
    if host.rstrip(".") == "localhost" or host.rstrip(".").endswith(".localhost"):
        raise OutboundRefused(f"{host} is not a public address.")
    return url


@functools.cache
def _resolvers() -> concurrent.futures.ThreadPoolExecutor:
    # getaddrinfo takes no timeout, and a tenant's name server can be slow on purpose:
    # lookups run here so the request's deadline bounds them too.
    return concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="resolve")


def _resolve(host: str, port: int, deadline: float) -> tuple[str, ...]:
    """Every address of `host`, each checked; the ones a request may use."""
    literal = _literal(host)
    if literal is not None:
        if not address_allowed(literal):
            raise OutboundRefused(f"{host} is not a public address.")
        return (str(literal),)
    lookup = _resolvers().submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = lookup.result(timeout=max(0.01, deadline - time.monotonic()))
    except concurrent.futures.TimeoutError:
        raise OutboundFailed(f"The host name {host} did not resolve in time.") from None
    except (OSError, UnicodeError):
        raise OutboundFailed(f"The host name {host} could not be resolved.") from None
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if host.rstrip(".") in _allowed().hosts:
        return addresses
    for address in addresses:
        if not address_allowed(ipaddress.ip_address(address.split("%")[0])):
            # Say which name, never which address: that would map the internal network.
            raise OutboundRefused(f"The host {host} resolves to an address that is not allowed.")
    if not addresses:
        raise OutboundFailed(f"The host name {host} has no address.")
    return addresses


def _target(url: str, deadline: float) -> _Target:
    parsed, host = _parse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return _Target(parsed, host, _resolve(host, port, deadline))


# --- the request --------------------------------------------------------------------------


@functools.cache
def _tls() -> ssl.SSLContext:
    # One context per process: building one (loading the CA bundle) costs milliseconds.
    return httpx.create_ssl_context(trust_env=False)


def request(
    method: str,
    url: str,
    *,
    content: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    max_bytes: int = 1_048_576,
    follow_redirects: int = 0,
) -> OutboundResponse:
    """Send one request to a tenant's URL under the rules above.

    `timeout` bounds the whole exchange (every hop); a response body over `max_bytes` stops
    the read and raises OutboundFailed. Redirects are returned as responses unless
    `follow_redirects` > 0, which follows at most that many (each hop checked again; 303,
    and 301/302 after a POST, continue as GET without a body, as browsers do).
    Raises OutboundRefused (the URL or its address is not allowed) or OutboundFailed.
    """
    started = time.monotonic()
    deadline = started + timeout
    # The body is read raw (bounded before any decompression), so ask for it uncompressed.
    headers = {"Accept-Encoding": "identity", **(headers or {})}
    hops = max(0, min(follow_redirects, MAX_REDIRECTS))
    for hop in range(hops + 1):
        target = _target(url, deadline)
        status, response_headers, body = _send(
            method, target, content, headers, deadline, max_bytes
        )
        location = response_headers.get("location")
        if status not in REDIRECT_STATUSES or hop == hops or not location:
            elapsed = time.monotonic() - started
            return OutboundResponse(status, response_headers, body, elapsed, url)
        next_url = urljoin(url, location)
        if status == 303 or (status in (301, 302) and method.upper() == "POST"):
            method, content = "GET", b""
            headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        if _origin(next_url) != _origin(url):
            headers = {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}
        url = next_url
    raise AssertionError("unreachable")  # the loop returns on its last hop


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host, parsed.port


def _send(
    method: str,
    target: _Target,
    content: bytes,
    headers: dict[str, str],
    deadline: float,
    max_bytes: int,
) -> tuple[int, dict[str, str], bytes]:
    """One hop, to the first checked address that accepts the connection."""
    host_header = target.url.netloc.decode("ascii")
    extensions = {}
    if target.url.scheme == "https" and _literal(target.host) is None:
        extensions["sni_hostname"] = target.host  # and the name certificates are checked for
    for index, address in enumerate(target.addresses):
        pinned = target.url.copy_with(host=address)
        last = index == len(target.addresses) - 1
        try:
            return _exchange(method, pinned, content, {**headers, "Host": host_header},
                             extensions, deadline, max_bytes)  # fmt: skip
        except httpx.ConnectError:
            if last:
                raise OutboundFailed(f"Could not connect to {target.host}.") from None
        except httpx.TimeoutException:
            raise OutboundFailed(f"{target.host} did not answer in time.") from None
        except httpx.HTTPError as error:
            # Protocol errors, TLS failures: the class says what, without addresses.
            name = type(error).__name__
            raise OutboundFailed(f"The exchange with {target.host} failed ({name}).") from None
    raise OutboundFailed(f"Could not connect to {target.host}.")


def _exchange(
    method: str,
    url: httpx.URL,
    content: bytes,
    headers: dict[str, str],
    extensions: dict[str, str],
    deadline: float,
    max_bytes: int,
) -> tuple[int, dict[str, str], bytes]:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise httpx.TimeoutException("deadline passed")
    # A client per request: a pooled connection to an address must never carry another
    # host's TLS session, and the only shared, costly part (the TLS context) is cached.
    with (
        httpx.Client(verify=_tls(), trust_env=False, timeout=remaining) as client,
        client.stream(
            method, url, content=content, headers=headers, extensions=extensions
        ) as response,  # fmt: skip
    ):
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise _too_large(response.status_code, max_bytes)
        body = b"".join(_bounded(response.iter_raw(), response.status_code, max_bytes, deadline))
        return response.status_code, {k.lower(): v for k, v in response.headers.items()}, body


def _bounded(
    chunks: Iterator[bytes], status: int, max_bytes: int, deadline: float
) -> Iterator[bytes]:
    read = 0
    for chunk in chunks:
        read += len(chunk)
        if read > max_bytes:
            raise _too_large(status, max_bytes)
        if time.monotonic() > deadline:  # a server trickling bytes under the read timeout
            raise httpx.ReadTimeout("deadline passed")
        yield chunk


def _too_large(status: int, max_bytes: int) -> OutboundFailed:
    return OutboundFailed(f"The response is larger than {max_bytes} bytes.", status=status)


# --- a pinned async client ----------------------------------------------------------------
# httpx2 (pydantic's continuation of httpx, the one the MCP SDK takes) for libraries that bring
# their own requests; the rules are the module's, only the client class differs.


def pinned_async_client(
    url: str, *, timeout: float, headers: dict[str, str] | None = None, max_bytes: int = 1_048_576
) -> httpx2.AsyncClient:
    """An async client for one tenant URL, for a library that sends its own requests.

    The URL's host is resolved and checked here, once; every request the client sends
    connects to a checked address (the name stays in the Host header and is the TLS server
    name, certificates checked against it), so no later lookup is made (no DNS rebinding).
    A request to any other origin raises OutboundRefused: a redirect or a URL a server
    hands back cannot lead elsewhere. Redirects are not followed; proxy variables are
    ignored; each response body is bounded by `max_bytes`, and network errors are
    OutboundFailed, named as `request` names them (never by address).
    Raises OutboundRefused or OutboundFailed when the URL itself cannot be used.
    """
    target = _target(url, time.monotonic() + timeout)
    return httpx2.AsyncClient(
        transport=_PinnedTransport(target, max_bytes),
        # Bodies are bounded as they arrive, so they must arrive as they are.
        headers={**(headers or {}), "Accept-Encoding": "identity"},
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )


class _PinnedTransport(httpx2.AsyncBaseTransport):
    def __init__(self, target: _Target, max_bytes: int) -> None:
        self._target = target
        self._max_bytes = max_bytes
        # Its own pool: every connection in it goes to the one checked host.
        self._inner = httpx2.AsyncHTTPTransport(verify=_tls(), trust_env=False)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        target = self._target
        if _origin(str(request.url)) != _origin(str(target.url)):
            raise OutboundRefused(f"Only {target.host} may be reached through this client.")
        extensions = dict(request.extensions)
        if target.url.scheme == "https" and _literal(target.host) is None:
            extensions["sni_hostname"] = target.host
        for index, address in enumerate(target.addresses):
            # A copy: the caller's request keeps the name (redirect checks compare it).
            pinned = httpx2.Request(
                request.method,
                request.url.copy_with(host=address),
                headers=request.headers,  # the Host header, with the name, is among them
                stream=request.stream,
                extensions=extensions,
            )
            last = index == len(target.addresses) - 1
            try:
                response = await self._inner.handle_async_request(pinned)
            except httpx2.ConnectError:
                if last:
                    raise OutboundFailed(f"Could not connect to {target.host}.") from None
                continue
            except httpx2.HTTPError as error:
                raise _failure(error, target.host) from None
            return self._checked(response)
        raise OutboundFailed(f"Could not connect to {target.host}.")

    def _checked(self, response: httpx2.Response) -> httpx2.Response:
        host, status = self._target.host, response.status_code
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            # The client would inflate it past any bound: a small body can hide gigabytes.
            raise OutboundFailed(f"{host} sent a compressed answer, asked not to.", status=status)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise _too_large(status, self._max_bytes)
        stream = _BoundedStream(response.stream, self._max_bytes, status, host)
        return httpx2.Response(
            status, headers=response.headers, stream=stream, extensions=response.extensions
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class _BoundedStream(httpx2.AsyncByteStream):
    def __init__(self, stream: object, max_bytes: int, status: int, host: str) -> None:
        assert isinstance(stream, httpx2.AsyncByteStream)
        self._stream, self._max_bytes, self._status, self._host = stream, max_bytes, status, host

    async def __aiter__(self) -> AsyncIterator[bytes]:
        read = 0
        try:
            async for chunk in self._stream:
                read += len(chunk)
                if read > self._max_bytes:
                    raise _too_large(self._status, self._max_bytes)
                yield chunk
        except httpx2.HTTPError as error:
            raise _failure(error, self._host) from None

    async def aclose(self) -> None:
        await self._stream.aclose()


def _failure(error: httpx2.HTTPError, host: str) -> OutboundFailed:
    if isinstance(error, httpx2.TimeoutException):
        return OutboundFailed(f"{host} did not answer in time.")
    # Protocol errors, TLS failures: the class says what, without addresses.
    return OutboundFailed(f"The exchange with {host} failed ({type(error).__name__}).")


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
