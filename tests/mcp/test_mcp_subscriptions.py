"""Resource subscriptions over /mcp: resources/subscribe and the GET stream (with Last-Event-ID,
on any node), subscriptions/listen, and the Mcp-Param-* headers of 2026-07-28."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import mcp_types
import pytest
from fastmcp import Client as FastMcpClient
from mcp.client.client import Client as SdkClient
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.shared.subscriptions import ResourceUpdated
from mcp_wire import BASE, ENVELOPE, LEGACY, UNKNOWN, in_session, modern, rpc

from support.pool import ServerPool
from support.servers import GranianServer

UPDATED = "notifications/resources/updated"
WAIT = 10.0  # seconds a notification may take to arrive


async def initialize(client: httpx.AsyncClient) -> str:
    params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t"}}
    r = await client.post("/mcp", content=rpc("initialize", params), headers=BASE)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["capabilities"]["resources"]["subscribe"] is True
    return r.headers["mcp-session-id"]


async def create(client: httpx.AsyncClient, data: Any = None) -> str:
    r = await client.post("/v1/contexts", json={"n": 0} if data is None else data)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


async def write(client: httpx.AsyncClient, token: str, n: int) -> None:
    r = await client.patch(
        f"/v1/contexts/{token}",
        content=json.dumps({"n": n}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text


async def subscription(
    client: httpx.AsyncClient, session: str, token: str, method: str = "resources/subscribe"
) -> dict[str, Any]:
    body = rpc(method, {"uri": f"ctx://{token}"})
    r = await client.post("/mcp", content=body, headers=in_session(session))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


class Events:
    """The events of an open SSE response, one at a time; comments are skipped."""

    def __init__(self, response: httpx.Response) -> None:
        self.queue: asyncio.Queue[tuple[str | None, dict[str, Any]] | None] = asyncio.Queue()
        self.primed: list[str | None] = []
        # Read apart: a wait that times out must not end the response's line iterator.
        self.reader = asyncio.ensure_future(self._read(response))

    async def _read(self, response: httpx.Response) -> None:
        event_id, data = None, []
        try:
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    event_id = line[3:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    text = "\n".join(data)
                    if text:
                        await self.queue.put((event_id, json.loads(text)))
                    else:  # a priming event: an id to resume from, no message
                        self.primed.append(event_id)
                    event_id, data = None, []
        finally:
            await self.queue.put(None)

    async def next(self, within: float = WAIT) -> tuple[str | None, dict[str, Any]]:
        """(id, the JSON-RPC message) of the next event that carries data."""
        event = await asyncio.wait_for(self.queue.get(), within)
        assert event is not None, "the stream ended"
        return event

    async def quiet(self, seconds: float) -> None:
        """Nothing but comments arrive for this long."""
        try:
            extra = await self.next(seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected event {extra}")

    async def close(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await self.reader


@asynccontextmanager
async def get_stream(
    client: httpx.AsyncClient, session: str, last_event_id: str | None = None
) -> AsyncIterator[Events]:
    headers = {**in_session(session), "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with client.stream("GET", "/mcp", headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = Events(r)
        try:
            yield events
        finally:
            await events.close()


def updated_uri(message: dict[str, Any]) -> str:
    assert message["method"] == UPDATED, message
    return str(message["params"]["uri"])


def run(coroutine: Any) -> None:
    asyncio.run(coroutine)


def _client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=30.0)


@pytest.fixture(params=["memory", "redis"])
def url(request: pytest.FixtureRequest, server_pool: ServerPool) -> str:
    """The base URL of a granian server on each backend."""
    return server_pool.granian(request.param).base_url


def test_a_rest_write_to_a_subscribed_context_is_notified_on_the_get_stream(url: str) -> None:

    async def main() -> None:
        async with _client(url) as client:
            session = await initialize(client)
            token, other = await create(client), await create(client)
            assert await subscription(client, session, token) == {
                "jsonrpc": "2.0",
                "id": 1,
                "result": {},
            }
            async with get_stream(client, session) as events:
                await write(client, other, 1)  # not subscribed: nothing
                await write(client, token, 1)
                first_id, message = await events.next()
                assert updated_uri(message) == f"ctx://{token}"
                await write(client, token, 2)
                second_id, message = await events.next()
                assert updated_uri(message) == f"ctx://{token}"
                assert first_id is not None
                assert second_id is not None
                assert first_id != second_id
                # The notification says "read it again": the read finds the new version.
                read = rpc("resources/read", {"uri": f"ctx://{token}"})
                r = await client.post("/mcp", content=read, headers=in_session(session))
                assert json.loads(r.json()["result"]["contents"][0]["text"]) == {"n": 2}
                await events.quiet(0.5)

    run(main())


def test_changes_made_while_no_stream_is_open_are_sent_when_one_opens(url: str) -> None:

    async def main() -> None:
        async with _client(url) as client:
            session = await initialize(client)
            first, second, quiet = await create(client), await create(client), await create(client)
            for token in (first, second, quiet):
                await subscription(client, session, token)
            await write(client, second, 1)
            await write(client, first, 1)
            await write(client, second, 2)  # one notification covers both changes of it
            async with get_stream(client, session) as events:
                uris = [updated_uri((await events.next())[1]) for _ in range(2)]
                # In the order of each context's latest change.
                assert uris == [f"ctx://{first}", f"ctx://{second}"]
                await events.quiet(0.5)
                # An MCP write is a change like any other.
                arguments = {"token": quiet, "patch": {"n": 9}}
                body = rpc("tools/call", {"name": "context_update", "arguments": arguments})
                r = await client.post("/mcp", content=body, headers=in_session(session))
                assert r.json()["result"]["isError"] is False
                assert updated_uri((await events.next())[1]) == f"ctx://{quiet}"

    run(main())


def test_unsubscribe_and_delete_end_notifications(url: str) -> None:

    async def main() -> None:
        async with _client(url) as client:
            session = await initialize(client)
            kept, dropped = await create(client), await create(client)
            await subscription(client, session, kept)
            await subscription(client, session, dropped)
            async with get_stream(client, session) as events:
                unsubscribed = await subscription(client, session, dropped, "resources/unsubscribe")
                assert unsubscribed["result"] == {}
                await write(client, dropped, 1)
                await write(client, kept, 1)
                assert updated_uri((await events.next())[1]) == f"ctx://{kept}"
                # Deleting a context is a change too.
                assert (await client.delete(f"/v1/contexts/{kept}")).status_code == 204
                assert updated_uri((await events.next())[1]) == f"ctx://{kept}"
                await events.quiet(0.5)
            # Unsubscribing again, or from what was never subscribed, is no error.
            again = await subscription(client, session, dropped, "resources/unsubscribe")
            assert again["result"] == {}

    run(main())


def test_a_stream_resumes_after_its_last_event_id(url: str) -> None:

    async def main() -> None:
        async with _client(url) as client:
            session = await initialize(client)
            a, b = await create(client), await create(client)
            await subscription(client, session, a)
            await subscription(client, session, b)
            async with get_stream(client, session) as events:
                await write(client, a, 1)
                first_id, _ = await events.next()
                seen = []
                for token, n in ((b, 1), (a, 2), (b, 2)):
                    await write(client, token, n)
                    seen.append(await events.next())
            assert first_id is not None
            async with get_stream(client, session, first_id) as events:
                # Everything after first_id again, in order, under the same ids.
                assert [await events.next() for _ in seen] == seen
                await events.quiet(0.5)
            headers = {**in_session(session), "Accept": "text/event-stream"}
            for bad in ("ffffffff:1-0", "nonsense", f"{first_id.split(':')[0]}:x-y"):
                r = await client.get("/mcp", headers={**headers, "Last-Event-ID": bad})
                assert r.status_code == 400, bad
                assert r.json()["error"]["code"] == -32600

    run(main())


def test_a_priming_id_resumes_the_get_stream_from_its_reply(url: str) -> None:
    async def main() -> None:
        async with _client(url) as client:
            session = await initialize(client)
            a = await create(client)
            headers = {**in_session(session), "Accept": "text/event-stream"}
            body = rpc("resources/subscribe", {"uri": f"ctx://{a}"})
            r = await client.post("/mcp", content=body, headers=headers)
            assert r.status_code == 200, r.text
            primed = r.text.split("\n")[0].removeprefix("id: ")
            assert r.text.startswith(f"id: {primed}\ndata:\n\n"), r.text
            await write(client, a, 1)  # after the reply, while no stream is open
            async with get_stream(client, session, primed) as events:
                _, message = await events.next()
                assert updated_uri(message) == f"ctx://{a}"
                assert events.primed == [primed]  # it opened where it was asked to start
                await events.quiet(0.5)

    run(main())


def test_subscribe_on_one_node_write_on_another(
    shared_nodes: tuple[GranianServer, GranianServer],
) -> None:
    a_node, b_node = shared_nodes

    async def main() -> None:
        async with _client(a_node.base_url) as a, _client(b_node.base_url) as b:
            session = await initialize(a)
            token = await create(b)
            async with get_stream(a, session) as events:
                # Subscribed through B while A holds the stream: A learns of it.
                await subscription(b, session, token)
                await write(b, token, 1)
                assert updated_uri((await events.next())[1]) == f"ctx://{token}"

    run(main())


def test_a_stream_dropped_on_one_node_resumes_on_another(
    shared_nodes: tuple[GranianServer, GranianServer],
) -> None:
    a_node, b_node = shared_nodes

    async def main() -> None:
        async with _client(a_node.base_url) as a, _client(b_node.base_url) as b:
            session = await initialize(a)
            x, y = await create(a), await create(a)
            await subscription(a, session, x)
            await subscription(b, session, y)
            async with get_stream(a, session) as events:
                await write(b, x, 1)
                last_id, _ = await events.next()
                sent = []
                for token, n in ((y, 1), (x, 2)):
                    await write(b, token, n)
                    sent.append(await events.next())
            # Dropped. What follows last_id is sent again by B, and what changed while no
            # stream was open follows it.
            await write(a, y, 2)
            async with get_stream(b, session, last_id) as events:
                assert [await events.next() for _ in sent] == sent
                event_id, message = await events.next()
                assert updated_uri(message) == f"ctx://{y}"
                assert event_id not in {i for i, _ in sent}
                await events.quiet(0.5)
                # And B follows the live changes from here, whichever node takes them.
                await write(a, x, 3)
                assert updated_uri((await events.next())[1]) == f"ctx://{x}"

    run(main())


def test_two_nodes_serving_one_session_notify_each_change_once(
    shared_nodes: tuple[GranianServer, GranianServer],
) -> None:
    a_node, b_node = shared_nodes

    async def main() -> None:
        async with _client(a_node.base_url) as a, _client(b_node.base_url) as b:
            session = await initialize(a)
            token = await create(a)
            await subscription(a, session, token)
            async with get_stream(a, session) as on_a, get_stream(b, session) as on_b:
                for n in (1, 2):
                    await write(a, token, n)
                    # Both nodes watch the context; one of them records the notification,
                    # and both streams send that one, under the same id.
                    from_a, from_b = await on_a.next(), await on_b.next()
                    assert from_a == from_b
                    assert updated_uri(from_a[1]) == f"ctx://{token}"
                await on_a.quiet(0.5)
                await on_b.quiet(0.1)

    run(main())


def test_subscribing_to_what_is_not_there_is_an_error(url: str) -> None:

    async def main() -> None:
        async with _client(url) as client:
            session = await initialize(client)
            for uri, code in [
                ("https://example.com/x", -32602),
                ("ctx://", -32602),
                ("ctx://not-a-token", -32602),
                (f"ctx://{UNKNOWN}", -32002),
                (None, -32602),
            ]:
                body = rpc("resources/subscribe", {"uri": uri})
                r = await client.post("/mcp", content=body, headers=in_session(session))
                assert r.status_code == 200, uri
                assert r.json()["error"]["code"] == code, (uri, r.text)
            body = rpc("resources/subscribe", {"uri": f"ctx://{await create(client)}"})
            r = await client.post("/mcp", content=body, headers=in_session(UNKNOWN))
            assert r.status_code == 404
            # 2026-07-28 has no resources/subscribe: subscriptions/listen replaces it.
            params = {"_meta": ENVELOPE, "uri": f"ctx://{UNKNOWN}"}
            r = await client.post(
                "/mcp",
                content=rpc("resources/subscribe", params),
                headers=modern("resources/subscribe"),
            )
            assert r.status_code == 404
            assert r.json()["error"]["code"] == -32601

    run(main())


def test_another_tenants_context_cannot_be_subscribed(server_pool: ServerPool) -> None:
    url = server_pool.granian("redis", "tenants").base_url

    async def main() -> None:
        async with _client(url) as client:
            client.headers["Authorization"] = "Bearer key-acme"
            token = await create(client)
            client.headers["Authorization"] = "Bearer key-globex"
            session = await initialize(client)
            reply = await client.post(
                "/mcp",
                content=rpc("resources/subscribe", {"uri": f"ctx://{token}"}),
                headers=in_session(session),
            )
            assert reply.json()["error"]["code"] == -32002
            params = {
                "_meta": ENVELOPE,
                "notifications": {"resourceSubscriptions": [f"ctx://{token}"]},
            }
            async with client.stream(
                "POST",
                "/mcp",
                content=rpc("subscriptions/listen", params),
                headers=modern("subscriptions/listen"),
            ) as r:
                events = Events(r)
                _, ack = await events.next()
                assert ack["params"]["notifications"] == {}
                await events.close()

    run(main())


def test_subscriptions_listen_streams_updates_of_the_named_resources(url: str) -> None:

    async def main() -> None:
        async with _client(url) as client:
            token, other = await create(client), await create(client)
            uris = [f"ctx://{token}", f"ctx://{UNKNOWN}", "ctx://bad", f"ctx://{token}"]
            params = {
                "_meta": ENVELOPE,
                "notifications": {"resourceSubscriptions": uris, "toolsListChanged": True},
            }
            async with client.stream(
                "POST",
                "/mcp",
                content=rpc("subscriptions/listen", params, id=7),
                headers=modern("subscriptions/listen"),
            ) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                events = Events(r)
                _, ack = await events.next()
                assert ack["method"] == "notifications/subscriptions/acknowledged"
                # Only what it will report on: the existing context, once.
                assert ack["params"]["notifications"] == {"resourceSubscriptions": [uris[0]]}
                meta = {"io.modelcontextprotocol/subscriptionId": 7}
                assert ack["params"]["_meta"] == meta
                await write(client, other, 1)
                await write(client, token, 1)
                _, message = await events.next()
                assert message == {
                    "jsonrpc": "2.0",
                    "method": UPDATED,
                    "params": {"uri": uris[0], "_meta": meta},
                }
                await events.quiet(0.5)
                await events.close()

    run(main())


def test_subscriptions_listen_refuses_what_it_cannot_serve(url: str) -> None:

    async def main() -> None:
        async with _client(url) as client:
            good = {"_meta": ENVELOPE, "notifications": {}}
            headers = {**modern("subscriptions/listen"), "Accept": "application/json"}
            r = await client.post(
                "/mcp", content=rpc("subscriptions/listen", good), headers=headers
            )
            assert r.status_code == 406
            for notifications in (None, [], {"resourceSubscriptions": "ctx://x"},
                                  {"resourceSubscriptions": [1]},
                                  {"resourceSubscriptions": ["ctx://x"] * 1001}):  # fmt: skip
                params = {"_meta": ENVELOPE, "notifications": notifications}
                r = await client.post(
                    "/mcp",
                    content=rpc("subscriptions/listen", params),
                    headers=modern("subscriptions/listen"),
                )
                assert r.status_code == 400, notifications
                assert r.json()["error"]["code"] == -32602, notifications
            # Its routing headers are checked like any other request's.
            r = await client.post(
                "/mcp", content=rpc("subscriptions/listen", good), headers=modern("tools/list")
            )
            assert r.status_code == 400
            assert r.json()["error"]["code"] == -32020

    run(main())


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_mcp_param_headers_must_mirror_the_annotated_arguments(
    server_pool: ServerPool, backend: str
) -> None:
    client = server_pool.client(backend, "granian")
    listed = client.post(
        "/mcp",
        content=rpc("tools/list", {"_meta": ENVELOPE}),
        headers=modern("tools/list"),
    ).json()["result"]["tools"]
    schemas = {tool["name"]: tool["inputSchema"] for tool in listed}
    assert schemas["context_create"]["properties"]["ttl"]["x-mcp-header"] == "Ttl"
    assert schemas["session_create"]["properties"]["ttl"]["x-mcp-header"] == "Ttl"

    def call(arguments: dict[str, Any], *headers: tuple[str, str]) -> httpx.Response:
        params = {"_meta": ENVELOPE, "name": "context_create", "arguments": arguments}
        sent = list(modern("tools/call", "context_create").items()) + list(headers)
        return client.post("/mcp", content=rpc("tools/call", params), headers=sent)

    for arguments, headers in [
        ({"data": 1, "ttl": 60}, [("Mcp-Param-Ttl", "60")]),
        ({"data": 1, "ttl": 60}, [("mcp-param-ttl", "60.0")]),  # compared as numbers
        ({"data": 1, "ttl": 60}, [("Mcp-Param-Ttl", "=?base64?NjA=?=")]),
        ({"data": 1}, []),
        ({"data": 1, "ttl": None}, []),
    ]:
        r = call(arguments, *headers)
        assert r.status_code == 200, (arguments, headers, r.text)
        assert r.json()["result"]["isError"] is False
    for arguments, headers in [
        ({"data": 1, "ttl": 60}, []),
        ({"data": 1, "ttl": 60}, [("Mcp-Param-Ttl", "61")]),
        ({"data": 1, "ttl": 60}, [("Mcp-Param-Ttl", "60.5")]),
        ({"data": 1, "ttl": 60}, [("Mcp-Param-Ttl", "60"), ("Mcp-Param-Ttl", "60")]),
        ({"data": 1, "ttl": 60}, [("Mcp-Param-Ttl", "=?base64?not base64?=")]),
        ({"data": 1}, [("Mcp-Param-Ttl", "60")]),
    ]:
        r = call(arguments, *headers)
        assert r.status_code == 400, (arguments, headers, r.text)
        assert r.json()["error"]["code"] == -32020, (arguments, headers)
    # A header no tool declares is not the server's to check.
    assert call({"data": 1}, ("Mcp-Param-Region", "eu")).status_code == 200
    encoded = base64.b64encode(b"60").decode()
    assert call({"data": 1, "ttl": 60}, ("Mcp-Param-Ttl", f"=?base64?{encoded}?=")).is_success


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_mcp_routing_headers_may_be_base64_wrapped(server_pool: ServerPool, backend: str) -> None:
    client = server_pool.client(backend, "granian")

    def wrapped(text: str) -> str:
        return f"=?base64?{base64.b64encode(text.encode()).decode()}?="

    def read(uri: str, name: str, method: str = "resources/read") -> httpx.Response:
        headers = {**modern("resources/read", uri), "Mcp-Name": name, "Mcp-Method": method}
        params = {"_meta": ENVELOPE, "uri": uri}
        return client.post("/mcp", content=rpc("resources/read", params), headers=headers)

    token = client.post("/v1/contexts", json={"wrapped": True}).json()["token"]
    uri = f"ctx://{token}"
    for name, method in [(uri, "resources/read"), (wrapped(uri), wrapped("resources/read"))]:
        r = read(uri, name, method)
        assert r.status_code == 200, (name, method, r.text)
        assert json.loads(r.json()["result"]["contents"][0]["text"]) == {"wrapped": True}
    # Wrapped or not, a header that says something else is a mismatch; so is a wrapping that
    # is not base64, which is then compared as it stands.
    for name in [wrapped(uri + "x"), "=?base64?not base64?=", f"=?{uri}"]:
        r = read(uri, name)
        assert r.status_code == 400, (name, r.text)
        assert r.json()["error"]["code"] == -32020, name


def _updates() -> tuple[asyncio.Queue[str], Any]:
    """A queue of updated URIs, and a message handler for a client that fills it."""
    queue: asyncio.Queue[str] = asyncio.Queue()

    async def handler(message: Any) -> None:
        if isinstance(message, mcp_types.ResourceUpdatedNotification):
            await queue.put(message.params.uri)

    return queue, handler


@pytest.mark.parametrize("kind", ["sdk-legacy", "fastmcp-legacy"])
def test_a_real_client_hears_of_a_rest_write_to_what_it_subscribed(url: str, kind: str) -> None:
    queue, handler = _updates()

    async def main() -> None:
        async with _client(url) as rest:
            token, other = await create(rest), await create(rest)
            uri = f"ctx://{token}"
            client: Any
            if kind == "sdk-legacy":
                client = SdkClient(f"{url}/mcp", mode="legacy", message_handler=handler)
            else:
                client = FastMcpClient(f"{url}/mcp", mode="legacy", message_handler=handler)
            async with client:
                session = client.session
                with warnings.catch_warnings():
                    # The SDK marks resources/subscribe as removed in 2026-07-28.
                    warnings.simplefilter("ignore", MCPDeprecationWarning)
                    await session.subscribe_resource(uri)
                await write(rest, other, 1)
                await write(rest, token, 1)
                assert await asyncio.wait_for(queue.get(), WAIT) == uri
                await write(rest, token, 2)
                assert await asyncio.wait_for(queue.get(), WAIT) == uri
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", MCPDeprecationWarning)
                    await session.unsubscribe_resource(uri)
                await write(rest, token, 3)
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(queue.get(), 0.5)

    run(main())


def test_the_sdk_client_listens_in_2026_07_28(url: str) -> None:

    async def main() -> None:
        async with _client(url) as rest, SdkClient(f"{url}/mcp") as client:
            assert client.session.discover_result is not None  # the 2026-07-28 era
            token = await create(rest)
            uri = f"ctx://{token}"
            unknown = f"ctx://{UNKNOWN}"
            async with client.listen(resource_subscriptions=[uri, unknown]) as subscription:
                assert subscription.honored.resource_subscriptions == [uri]
                await write(rest, token, 1)
                events = aiter(subscription)
                event = await asyncio.wait_for(anext(events), WAIT)
                assert event == ResourceUpdated(uri=uri)
                # The event says "read it again", and a read shows the write.
                read = await client.read_resource(uri)
                assert json.loads(read.contents[0].text) == {"n": 1}

    run(main())
