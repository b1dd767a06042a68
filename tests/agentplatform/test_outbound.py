"""Requests to tenants' URLs (agentplatform.infra.outbound): real loopback servers for what is
allowed, and every kind of internal address refused. The one thing patched is the resolver
(`socket.getaddrinfo` as the module calls it), to give names refused or changing addresses."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from agentplatform.devtools.testing import free_port
from agentplatform.infra import outbound
from agentplatform.infra.outbound import OutboundError, OutboundFailed, OutboundRefused
from tests.loopback import Received, Reply, receiver

_real_getaddrinfo = socket.getaddrinfo


@pytest.fixture
def nothing_allowed(settings: Any) -> None:
    """Production's rules: no exception for loopback (the suite's default allows it)."""
    settings.OUTBOUND_ALLOWED_NETWORKS = []


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[list[str]]]]:
    """Fake DNS: `names[host]` is a list of answers, one per lookup (the last repeats);
    every lookup of a faked name is counted in `names["lookups:" + host]`."""
    table: dict[str, list[list[str]]] = {}

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in table:
            return _real_getaddrinfo(host, port, *args, **kwargs)
        table.setdefault(f"lookups:{host}", []).append([])
        answers = table[host]
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port),
            )
            for a in addresses
        ]

    monkeypatch.setattr(outbound.socket, "getaddrinfo", getaddrinfo)
    yield table


def lookups(table: dict[str, list[list[str]]], host: str) -> int:
    return len(table.get(f"lookups:{host}", []))


# --- what is allowed ----------------------------------------------------------------------


def test_a_loopback_server_is_reached_when_the_deployment_allows_it() -> None:
    with receiver(lambda r: Reply(201, b'{"ok": true}', {"X-Reply": "yes"})) as server:
        response = outbound.request(
            "POST",
            f"{server.url}/hook?x=1",
            content=b'{"a": 1}',
            headers={"Content-Type": "application/json", "X-Sent": "1"},
            timeout=5,
            max_bytes=1024,
        )
    (got,) = server.received
    assert (response.status, response.body, response.headers["x-reply"]) == (
        201,
        b'{"ok": true}',
        "yes",
    )
    assert (got.method, got.path, got.body) == ("POST", "/hook?x=1", b'{"a": 1}')
    assert got.headers["host"] == f"127.0.0.1:{server.port}"
    assert got.headers["x-sent"] == "1"
    assert response.elapsed > 0


def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_connected_to(
    names: dict[str, list[list[str]]],
) -> None:
    with receiver() as server:
        names["hooks.example"] = [["127.0.0.1"]]
        response = outbound.request("GET", f"http://hooks.example:{server.port}/x")
    assert response.status == 200
    assert lookups(names, "hooks.example") == 1
    # The name travels in the Host header, not the address it was resolved to.
    assert server.received[0].headers["host"] == f"hooks.example:{server.port}"


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808",
     "2002:808:808::1"],
)  # fmt: skip
def test_public_addresses_are_allowed(address: str, nothing_allowed: None) -> None:
    assert outbound.address_allowed(ipaddress.ip_address(address))


# --- what is refused ----------------------------------------------------------------------

REFUSED_ADDRESSES = [
    "127.0.0.1", "127.8.9.10", "::1", "0.0.0.0", "::", "10.1.2.3", "172.16.0.1", "192.168.1.1",
    "169.254.169.254", "169.254.170.2", "100.64.0.1", "100.100.100.200", "168.63.129.16",
    "fd00:ec2::254", "fc00::1", "fe80::1", "224.0.0.1", "239.255.255.250", "255.255.255.255",
    "240.0.0.1", "192.0.2.1", "198.51.100.7", "203.0.113.9", "198.18.0.1", "192.0.0.8",
    "192.88.99.1", "2001:db8::1", "3fff::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "::ffff:169.254.169.254", "::127.0.0.1", "2002:7f00:1::1", "2002:a9fe:a9fe::1",
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::808:808", "2001::1", "100::1",
]  # fmt: skip


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_internal_addresses_are_refused(address: str, nothing_allowed: None) -> None:
    assert not outbound.address_allowed(ipaddress.ip_address(address))
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(OutboundRefused, match="not a public address"):
        outbound.request("GET", f"http://{host}:{free_port()}/")
    with pytest.raises(OutboundRefused):
        outbound.url_check(f"https://{host}/hook")


@pytest.mark.parametrize(
    "url_of",
    [
        lambda port: f"http://127.0.0.1:{port}/",
        lambda port: f"http://localhost:{port}/",
        lambda port: f"http://[::ffff:127.0.0.1]:{port}/",
        lambda port: f"http://0.0.0.0:{port}/",
        lambda port: f"http://2130706433:{port}/",  # 127.0.0.1 as one decimal number
        lambda port: f"http://0x7f.1:{port}/",  # and in hex, shortened
        lambda port: f"http://127.1:{port}/",
        lambda port: f"http://0:{port}/",
    ],
)
def test_a_listening_loopback_server_is_not_reached_without_the_setting(
    url_of: Callable[[int], str], nothing_allowed: None
) -> None:
    with receiver() as server, pytest.raises(OutboundError):
        outbound.request("GET", url_of(server.port))
    assert server.received == []


@pytest.mark.parametrize(
    "answer",
    [["10.0.0.5"], ["169.254.169.254"], ["93.184.216.34", "10.0.0.5"], ["::1"],
     ["2606:4700::1111", "::ffff:192.168.0.1"], ["100.64.1.1"]],
)  # fmt: skip
def test_a_name_resolving_to_any_refused_address_is_refused_without_naming_it(
    answer: list[str], names: dict[str, list[list[str]]], nothing_allowed: None
) -> None:
    names["internal.example"] = [answer]
    with pytest.raises(OutboundRefused) as refused:
        outbound.request("POST", "https://internal.example/hook", content=b"{}")
    message = str(refused.value)
    assert "internal.example" in message
    assert not any(address in message for address in answer)


def test_dns_rebinding_cannot_reach_the_second_address(
    names: dict[str, list[list[str]]], settings: Any
) -> None:
    """The name answers an allowed address first, then a refused one (a rebinding attack),
    and a server listens on the same port at both. The request connects to the address it
    checked, with no second lookup: the refused server sees nothing."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    with receiver() as public, receiver(host="127.0.0.2", port=public.port) as internal:
        names["rebind.example"] = [["127.0.0.1"], ["127.0.0.2"]]
        assert outbound.request("GET", f"http://rebind.example:{public.port}/").status == 200
        assert lookups(names, "rebind.example") == 1
        # The next request looks the name up again, and is refused.
        with pytest.raises(OutboundRefused):
            outbound.request("GET", f"http://rebind.example:{public.port}/")
    assert len(public.received) == 1
    assert internal.received == []


def test_an_allowed_host_name_may_resolve_to_a_private_address(
    names: dict[str, list[list[str]]], settings: Any
) -> None:
    settings.OUTBOUND_ALLOWED_NETWORKS = ["hooks.internal"]
    names["hooks.internal"] = [["127.0.0.1"]]
    names["other.internal"] = [["127.0.0.1"]]
    with receiver() as server:
        assert outbound.request("GET", f"http://hooks.internal:{server.port}/").status == 200
        with pytest.raises(OutboundRefused):
            outbound.request("GET", f"http://other.internal:{server.port}/")
    assert outbound.url_check("http://hooks.internal/x") == "http://hooks.internal/x"


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x", "file:///etc/passwd", "gopher://example.com/", "javascript:alert(1)",
     "example.com/hook", "//example.com/hook", "http://user:pw@example.com/",
     "http:///nohost", "http://exa mple.com/", "https://" + "a" * 2100 + ".com/"],
)  # fmt: skip
def test_urls_that_are_not_plain_http_or_https_are_refused(url: str) -> None:
    with pytest.raises(OutboundRefused):
        outbound.url_check(url)
    with pytest.raises(OutboundError):
        outbound.request("GET", url)


def test_url_check_accepts_public_names_and_refuses_loopback_names(nothing_allowed: None) -> None:
    assert (
        outbound.url_check("https://hooks.example.com/in?x=1") == "https://hooks.example.com/in?x=1"
    )
    for url in ("http://localhost/", "http://app.localhost:8000/", "http://LOCALHOST./",
                "http://0/", "http://127.1/", "http://0x7f.1/", "http://2130706433/"):  # fmt: skip
        with pytest.raises(OutboundRefused):
            outbound.url_check(url)


# --- redirects ----------------------------------------------------------------------------


def _redirecting(location: Callable[[Received], str], status: int = 302) -> Callable[..., Reply]:
    def answer(request: Received) -> Reply:
        if request.path.startswith("/final"):
            return Reply(200, f"{request.method} final".encode())
        return Reply(status, b"", {"Location": location(request)})

    return answer


def test_redirects_are_not_followed_by_default() -> None:
    with receiver(_redirecting(lambda r: "/final")) as server:
        response = outbound.request("POST", f"{server.url}/start", content=b"{}")
    assert (response.status, response.headers["location"]) == (302, "/final")
    assert [r.path for r in server.received] == ["/start"]


def test_redirects_are_followed_when_the_caller_allows_and_303_becomes_get() -> None:
    with receiver(_redirecting(lambda r: "/final", status=303)) as server:
        response = outbound.request(
            "POST", f"{server.url}/start", content=b"{}", follow_redirects=2
        )
    assert (response.status, response.body) == (200, b"GET final")
    assert response.url == f"{server.url}/final"


def test_each_redirect_hop_is_checked_again(settings: Any) -> None:
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    with receiver(host="127.0.0.2") as internal:
        to_internal = _redirecting(lambda r: f"http://127.0.0.2:{internal.port}/final")
        with receiver(to_internal) as public, pytest.raises(OutboundRefused):
            outbound.request("GET", f"{public.url}/start", follow_redirects=5)
        assert len(public.received) == 1
    assert internal.received == []


def test_redirects_are_bounded() -> None:
    with receiver(_redirecting(lambda r: f"/loop{len(r.path)}")) as server:
        response = outbound.request("GET", f"{server.url}/start", follow_redirects=3)
    assert response.status == 302
    assert len(server.received) == 4  # the request and three hops


# --- limits -------------------------------------------------------------------------------


@pytest.mark.parametrize("declared", [True, False])
def test_a_response_over_the_size_limit_stops_the_read(declared: bool) -> None:
    big = b"x" * 200_000
    server = receiver(lambda r: Reply(200, big, length=declared))
    with server as running, pytest.raises(OutboundFailed, match="larger than 1000") as failed:
        outbound.request("GET", running.url, max_bytes=1000)
    assert failed.value.status == 200
    assert failed.value.retryable


def test_a_slow_server_times_out() -> None:
    with receiver(lambda r: Reply(200, b"late", delay=3)) as server:
        started = time.monotonic()
        with pytest.raises(OutboundFailed, match="did not answer in time"):
            outbound.request("GET", server.url, timeout=0.5)
    assert time.monotonic() - started < 2


def test_a_closed_port_is_a_failure_that_may_be_retried() -> None:
    with pytest.raises(OutboundFailed, match="Could not connect") as failed:
        outbound.request("GET", f"http://127.0.0.1:{free_port()}/", timeout=2)
    assert failed.value.retryable and failed.value.status is None


def test_proxy_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    with receiver() as proxy, receiver() as server:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert outbound.request("GET", server.url).status == 200
    assert proxy.received == [] and len(server.received) == 1


def test_a_slow_name_server_is_bounded_by_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(host: str, *args: Any, **kwargs: Any) -> Any:
        time.sleep(1.5)
        return _real_getaddrinfo("127.0.0.1", *args, **kwargs)

    monkeypatch.setattr(outbound.socket, "getaddrinfo", slow)
    started = time.monotonic()
    with pytest.raises(OutboundFailed, match="did not resolve in time"):
        outbound.request("GET", "http://slow.example/", timeout=0.3)
    assert time.monotonic() - started < 1


# --- the pinned async client (libraries that send their own requests: the MCP SDK) --------


def _get_all(client: Any, urls: list[str]) -> list[int]:
    async def send() -> list[int]:
        async with client:
            return [(await client.get(url)).status_code for url in urls]

    result: list[int] = anyio.run(send)
    return result


def test_a_pinned_client_looks_the_name_up_once_and_connects_to_the_checked_address(
    names: dict[str, list[list[str]]], settings: Any
) -> None:
    """The name answers an allowed address, then a refused one (rebinding): however many
    requests the client sends, it looked up once and reached only the address it checked."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    with receiver() as public, receiver(host="127.0.0.2", port=public.port) as internal:
        names["mcp.example"] = [["127.0.0.1"], ["127.0.0.2"]]
        url = f"http://mcp.example:{public.port}"
        client = outbound.pinned_async_client(url + "/mcp", timeout=5, headers={"X-Key": "k"})
        assert _get_all(client, [f"{url}/mcp", f"{url}/mcp?again", f"{url}/other"]) == [200] * 3
    assert lookups(names, "mcp.example") == 1
    assert [r.path for r in public.received] == ["/mcp", "/mcp?again", "/other"]
    assert {r.headers["host"] for r in public.received} == {f"mcp.example:{public.port}"}
    assert all(r.headers["x-key"] == "k" for r in public.received)
    assert internal.received == []


def test_a_pinned_client_refuses_a_name_resolving_to_a_refused_address(
    names: dict[str, list[list[str]]], nothing_allowed: None
) -> None:
    with receiver() as server:
        names["internal.example"] = [["127.0.0.1"]]
        with pytest.raises(OutboundRefused, match=r"internal\.example resolves to an address"):
            outbound.pinned_async_client(f"http://internal.example:{server.port}/", timeout=5)
        with pytest.raises(OutboundRefused, match="not a public address"):
            outbound.pinned_async_client(f"http://127.0.0.1:{server.port}/", timeout=5)
    assert server.received == []


def test_a_pinned_client_reaches_no_other_origin_and_follows_no_redirect() -> None:
    with receiver() as other:
        elsewhere = f"{other.url}/final"
        with receiver(lambda r: Reply(302, b"", {"Location": elsewhere})) as server:
            client = outbound.pinned_async_client(server.url, timeout=5)
            assert _get_all(client, [server.url + "/start"]) == [302]
            client = outbound.pinned_async_client(server.url, timeout=5)
            with pytest.raises(OutboundRefused, match=r"Only 127\.0\.0\.1 may be reached"):
                _get_all(client, [elsewhere])
    assert other.received == []


def test_a_pinned_clients_responses_are_bounded_and_its_failures_name_no_address() -> None:
    with receiver(lambda r: Reply(200, b"x" * 5000, length=False)) as server:
        client = outbound.pinned_async_client(server.url, timeout=5, max_bytes=1000)
        with pytest.raises(OutboundFailed, match="larger than 1000"):
            _get_all(client, [server.url])
    closed = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(OutboundFailed, match=r"Could not connect to 127\.0\.0\.1"):
        _get_all(outbound.pinned_async_client(closed, timeout=2), [closed])
