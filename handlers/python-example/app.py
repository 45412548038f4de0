"""An arrpc-host handler in Python: echo, sum, caller, relay, fetch, count
and session, chosen by the served name.

componentize-py turns this module into a WebAssembly component implementing
the `handler` world of wit/handler.wit, plus wasi:http/outgoing-handler
(wit/python-handler.wit). The same component is served under several names
(see README.md): a name ending in "echo" returns the payload unchanged, one
ending in "sum" adds up numbers with the same input, output and error texts
as the Rust `sum` handler, one ending in "caller" replies with who called,
as the host verified it, asked of the host through the imported `client`
interface. One ending in "relay" calls another arrpc service through the
imported `upstream` interface, and one ending in "fetch" makes an HTTP GET
with componentize-py's bundled `poll_loop`. Two keep state in the
key-value stores the handler's `stores` lists (wasi:keyvalue), through the
dict-like `Store` of keyvalue.py: one ending in "count" increments a
counter, one ending in "session" reads and merges a session's fields.

wasi:http has an interface named `types` too, and `poll_loop` imports it by
that name, so build.sh binds the handler world's `types` as `handler_types`.
"""

import asyncio
import sys
from urllib.parse import urlsplit

import msgpack
import poll_loop
import wit_world
from keyvalue import Store, StoreError
from wit_world.imports import client, handler_types, upstream
from wit_world.imports.types import Fields, OutgoingRequest, Scheme_Http, Scheme_Https, Scheme_Other

EXPECTED = 'an array of numbers or {"numbers": [...]}'


class WitWorld(wit_world.WitWorld):
    def handle(self, ctx: handler_types.Context, payload: bytes) -> bytes:
        if ctx.handler.endswith("echo"):
            return payload
        if ctx.handler.endswith("sum"):
            return sum_numbers(payload)
        if ctx.handler.endswith("caller"):
            return who_called(client.caller())
        if ctx.handler.endswith("relay"):
            return relay(payload)
        if ctx.handler.endswith("fetch"):
            return fetch(payload)
        if ctx.handler.endswith("count"):
            return count(payload)
        if ctx.handler.endswith("session"):
            return session(payload)
        # stderr goes to the host's log, tagged with handler and request id.
        print(f"no operation for the name {ctx.handler!r}", file=sys.stderr)
        raise wit_world.Err(
            f"{ctx.handler}: serve this component under a name ending in echo, sum, caller, relay, fetch, count or session"
        )


def who_called(caller: handler_types.Identity | None) -> bytes:
    """The caller's SPIFFE ID (None when the certificate carries none) and
    DNS names; nil when the host verified no client certificate (plain TCP,
    or TLS without one)."""
    if caller is None:
        return msgpack.packb(None)
    return msgpack.packb({"spiffe_id": caller.spiffe_id, "dns_names": caller.dns_names})


def relay(payload: bytes) -> bytes:
    """Calls `method` of the upstream the message names, {"upstream": name,
    "method": name, "params": value}, and replies with its result as the
    upstream sent it. The host allows only the upstreams this handler's
    `upstreams` lists. A failed call replies `relay: <why>: <text>`, the
    case of the WIT `call-error`, which says whether the call may have run."""
    request = decode_map(payload)
    if request is None or not isinstance(request.get("upstream"), str) or not isinstance(request.get("method"), str):
        raise wit_world.Err('relay: expected {"upstream": name, "method": name, "params": value}')
    params = msgpack.packb(request.get("params"))
    try:
        return upstream.call(request["upstream"], request["method"], params)
    except wit_world.Err as e:
        raise wit_world.Err(f"relay: {call_error(e.value)}")


def decode_map(payload: bytes) -> dict | None:
    """The message, if it is a map."""
    try:
        value = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception:
        return None
    return value if isinstance(value, dict) else None


def call_error(error: upstream.CallError) -> str:
    """A `call-error` as `<case>: <text>`, the case as WIT spells it."""
    if isinstance(error, upstream.CallError_TimedOut):
        return "timed-out"
    case = {
        upstream.CallError_Denied: "denied",
        upstream.CallError_NotRun: "not-run",
        upstream.CallError_MayHaveRun: "may-have-run",
        upstream.CallError_Remote: "remote",
    }[type(error)]
    return f"{case}: {error.value}"


def count(payload: bytes) -> bytes:
    """Adds `by` (default 1) to the counter under `key` in the store the
    message names, {"store": name, "key": text, "by": integer}, and replies
    with the new value. The increment is atomic in the store, so handlers
    on any number of instances or hosts sharing it lose no count. A store
    failure replies `count: <case>`: no-such-store, access-denied (the
    handler's `stores` does not list it) or `other: <why>`."""
    request = decode_map(payload)
    by = request.get("by", 1) if request is not None else None
    if (
        request is None
        or not isinstance(request.get("store"), str)
        or not isinstance(request.get("key"), str)
        # bool is an int in Python; the store takes a signed 64-bit delta.
        or isinstance(by, bool)
        or not isinstance(by, int)
        or not -(2**63) <= by < 2**63
    ):
        raise wit_world.Err('count: expected {"store": name, "key": text, "by": integer}')
    try:
        with Store(request["store"]) as counts:
            return msgpack.packb(counts.increment(request["key"], by))
    except StoreError as e:
        raise wit_world.Err(f"count: {e}")


def session(payload: bytes) -> bytes:
    """A session's fields, a map kept as MessagePack under `session:<id>`
    in the store the message names, {"store": name, "id": text, "set":
    map}. With `set`, merges those fields into the stored ones and replies
    with the result; without, replies with what is stored (an empty map for
    a new session). The merge is a compare-and-swap, so two messages
    setting different fields of one session at once both land."""
    request = decode_map(payload)
    if (
        request is None
        or not isinstance(request.get("store"), str)
        or not isinstance(request.get("id"), str)
        or not isinstance(request.get("set", {}), dict)
    ):
        raise wit_world.Err('session: expected {"store": name, "id": text, "set": map (optional)}')
    key = f"session:{request['id']}"

    def fields(stored: bytes | None) -> dict:
        if stored is None:
            return {}
        try:
            value = msgpack.unpackb(stored, raw=False, strict_map_key=False)
        except Exception:
            value = None
        if not isinstance(value, dict):
            raise wit_world.Err(f"session: {key} holds no MessagePack map")
        return value

    def merged(stored: bytes | None) -> bytes:
        return msgpack.packb(fields(stored) | request["set"])

    try:
        with Store(request["store"]) as sessions:
            if "set" in request:
                return sessions.update(key, merged)
            return msgpack.packb(fields(sessions.get(key)))
    except StoreError as e:
        raise wit_world.Err(f"session: {e}")


def fetch(payload: bytes) -> bytes:
    """GETs the URL the message holds, {"url": "http://...", "headers"?:
    {name: value}}, and replies with {"status": n, "headers": {name: value},
    "body": bytes}. The host allows only what this handler's
    `allowed_outbound_hosts` lists; a request that gets no response replies
    `fetch: <wasi:http error-code>`."""
    request = decode_map(payload)
    if request is None or not isinstance(request.get("url"), str):
        raise wit_world.Err('fetch: expected {"url": "http://...", "headers"?: {name: value}}')
    # An event loop over wasi:io/poll: `handle` is synchronous, the
    # helpers of poll_loop are coroutines.
    loop = poll_loop.PollLoop()
    asyncio.set_event_loop(loop)
    try:
        status, headers, body = loop.run_until_complete(get(request["url"], request.get("headers") or {}))
    except wit_world.Err as e:
        raise wit_world.Err(f"fetch: {e.value}")
    finally:
        loop.close()
    return msgpack.packb({"status": status, "headers": headers, "body": body})


async def get(url: str, headers: dict) -> tuple[int, dict, bytes]:
    """One GET through wasi:http: the status, the headers (repeated ones
    joined with ", ") and the whole body."""
    parts = urlsplit(url)
    scheme = {"http": Scheme_Http(), "https": Scheme_Https()}.get(parts.scheme, Scheme_Other(parts.scheme))
    fields = Fields.from_list([(str(name), str(value).encode()) for name, value in headers.items()])
    request = OutgoingRequest(fields)
    request.set_scheme(scheme)
    request.set_authority(parts.netloc)
    request.set_path_with_query(parts.path + (f"?{parts.query}" if parts.query else "") or "/")
    with await poll_loop.send(request) as response:
        with response.headers() as fields:
            received = {}
            for name, value in fields.entries():
                text = value.decode("utf-8", "replace")
                received[name] = f"{received[name]}, {text}" if name in received else text
        stream = poll_loop.Stream(response.consume())
        chunks = []
        while (chunk := await stream.next()) is not None:
            chunks.append(chunk)
        return response.status(), received, b"".join(chunks)


def sum_numbers(payload: bytes) -> bytes:
    try:
        value = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as e:
        raise wit_world.Err(f"sum: invalid MessagePack: {e}")
    items = numbers(value)
    exact, total, any_float = 0, 0.0, False
    for index, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise wit_world.Err(f"sum: expected {EXPECTED}, got {kind(item)} at index {index}")
        if isinstance(item, float):
            any_float = True
            total += item
        else:
            exact += item
            total += item
    result = total if any_float else exact
    try:
        return msgpack.packb({"sum": result, "count": len(items)})
    except OverflowError:
        raise wit_world.Err("sum: integer overflow")


def numbers(value):
    """Finds the list of numbers in either accepted shape."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key in value:
            if key != "numbers":
                raise wit_world.Err(f"sum: expected {EXPECTED}, got a map with the key {key!r}")
        if "numbers" not in value:
            raise wit_world.Err(f'sum: expected {EXPECTED}, got a map without "numbers"')
        if not isinstance(value["numbers"], list):
            raise wit_world.Err(f'sum: expected {EXPECTED}, got "numbers" holding {kind(value["numbers"])}')
        return value["numbers"]
    raise wit_world.Err(f"sum: expected {EXPECTED}, got {kind(value)}")


def kind(value) -> str:
    """Names a value's MessagePack type for error messages, with its article."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (bytes, bytearray)):
        return "binary data"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a map"
    return "an extension value"
