"""An arrpc-host handler in Python: echo, identity, sum, caller, relay,
fetch, count, session and samples, chosen by the served name.

componentize-py turns this module into a WebAssembly component implementing
the `interpreted-handler` world of wit/ (the handler world with `codec`),
plus wasi:http/outgoing-handler (wit/python-handler.wit). The same
component is served under several names (see README.md). Every operation
but echo takes the message as Python objects and returns objects, through
arrpc_handler.py: a name ending in "sum" adds up numbers with the Rust
`sum` handler's replies and error texts (booleans, though, count as
numbers, as in Python's sum()), one ending in
"caller" replies with who called, as the host verified it, asked of the
host through the imported `client` interface. One ending in "relay" calls
another arrpc service through the imported `upstream` interface, and one
ending in "fetch" makes an HTTP GET with componentize-py's bundled
`poll_loop`. Two keep state in the key-value stores the handler's `stores`
lists (wasi:keyvalue), through the dict-like `Store` of keyvalue.py: one
ending in "count" increments a counter, one ending in "session" reads and
merges a session's fields. A name ending in "echo" returns the payload's
bytes without decoding them, one ending in "identity" the message as the
objects it decoded to, one ending in "samples" the objects samples.py
names by the message (tuples, an `IntEnum`, ints at every edge, ...).

wasi:http has an interface named `types` too, and `poll_loop` imports it by
that name, so build.sh binds the handler world's `types` as `handler_types`.
"""

import asyncio
import sys
from functools import reduce
from operator import add
from urllib.parse import urlsplit

import poll_loop
import wit_world
from arrpc_handler import Error, Raw, decode, encode, reply
from keyvalue import Store, StoreError
from samples import SAMPLES
from wit_world.imports import client, handler_types, upstream
from wit_world.imports.types import Fields, OutgoingRequest, Scheme_Http, Scheme_Https, Scheme_Other

EXPECTED = 'an array of numbers or {"numbers": [...]}'


class WitWorld(wit_world.WitWorld):
    def handle(self, ctx: handler_types.Context, payload: bytes) -> bytes:
        # Echo works on the bytes: nothing to decode, nothing to encode.
        if ctx.handler.endswith("echo"):
            return payload
        for suffix, operation in OPERATIONS.items():
            if ctx.handler.endswith(suffix):
                return reply(operation, ctx, payload)
        # stderr goes to the host's log, tagged with handler and request id.
        print(f"no operation for the name {ctx.handler!r}", file=sys.stderr)
        raise Error(
            f"{ctx.handler}: serve this component under a name ending in echo, identity, sum, caller, relay, fetch, count, session or samples"
        )


def identity(message, ctx):
    """The message back, as the objects it decoded to: what `echo` does,
    through the object API (decoded, then encoded again)."""
    return message


def sample(message, ctx):
    """The objects samples.py names by the message, a str: what the SDK
    packs of objects no message decodes to (tuples, an `IntEnum`, ints at
    the edges, a set it cannot carry)."""
    if message not in SAMPLES:
        raise Error(f"samples: expected one of {', '.join(SAMPLES)}")
    return SAMPLES[message]()


def sum_numbers(message, ctx) -> dict:
    """{"sum": total, "count": n} of an array of numbers, or of {"numbers":
    [...]}. Integers add exactly; any float makes the sum a float, added in
    order, as the Rust `sum` adds. Booleans count as 1 and 0, as Python's
    sum() counts them."""
    items = numbers(message)
    try:
        # In C, and exact for ints.
        total = sum(items)
    except TypeError:
        raise Error(f"sum: expected {EXPECTED}, got {first_not_a_number(items)}") from None
    if type(total) is float:
        # sum() adds floats with compensation (Python 3.12 on): add in order.
        total = reduce(add, items, 0.0)
    elif not -(2**63) <= total < 2**64:
        raise Error("sum: integer overflow")
    return {"sum": total, "count": len(items)}


def first_not_a_number(items: list) -> str:
    """What the first item that is not a number is, and where."""
    for index, item in enumerate(items):
        if not isinstance(item, (int, float)):
            return f"{kind(item)} at index {index}"
    raise AssertionError("sum() refused only numbers")


def numbers(value) -> list:
    """Finds the list of numbers in either accepted shape."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key in value:
            if key != "numbers":
                raise Error(f"sum: expected {EXPECTED}, got a map with the key {key!r}")
        if "numbers" not in value:
            raise Error(f'sum: expected {EXPECTED}, got a map without "numbers"')
        if not isinstance(value["numbers"], list):
            raise Error(f'sum: expected {EXPECTED}, got "numbers" holding {kind(value["numbers"])}')
        return value["numbers"]
    raise Error(f"sum: expected {EXPECTED}, got {kind(value)}")


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
    if isinstance(value, bytes):
        return "binary data"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a map"
    return "an extension value"


def who_called(message, ctx) -> dict | None:
    """The caller's SPIFFE ID (None when the certificate carries none) and
    DNS names; nil when the host verified no client certificate (plain TCP,
    or TLS without one)."""
    caller = client.caller()
    if caller is None:
        return None
    return {"spiffe_id": caller.spiffe_id, "dns_names": caller.dns_names}


def relay(message, ctx) -> Raw:
    """Calls `method` of the upstream the message names, {"upstream": name,
    "method": name, "params": value}, and replies with its result as the
    upstream sent it. The host allows only the upstreams this handler's
    `upstreams` lists. A failed call replies `relay: <why>: <text>`, the
    case of the WIT `call-error`, which says whether the call may have run."""
    if not isinstance(message, dict) or not isinstance(message.get("upstream"), str) or not isinstance(message.get("method"), str):
        raise Error('relay: expected {"upstream": name, "method": name, "params": value}')
    try:
        return Raw(upstream.call(message["upstream"], message["method"], encode(message.get("params"))))
    except wit_world.Err as e:
        raise Error(f"relay: {call_error(e.value)}") from None


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


def count(message, ctx) -> int:
    """Adds `by` (default 1) to the counter under `key` in the store the
    message names, {"store": name, "key": text, "by": integer}, and replies
    with the new value. The increment is atomic in the store, so handlers
    on any number of instances or hosts sharing it lose no count. A store
    failure replies `count: <case>`: no-such-store, access-denied (the
    handler's `stores` does not list it) or `other: <why>`."""
    by = message.get("by", 1) if isinstance(message, dict) else None
    if (
        not isinstance(message, dict)
        or not isinstance(message.get("store"), str)
        or not isinstance(message.get("key"), str)
        # bool is an int in Python; the store takes a signed 64-bit delta.
        or isinstance(by, bool)
        or not isinstance(by, int)
        or not -(2**63) <= by < 2**63
    ):
        raise Error('count: expected {"store": name, "key": text, "by": integer}')
    try:
        with Store(message["store"]) as counts:
            return counts.increment(message["key"], by)
    except StoreError as e:
        raise Error(f"count: {e}") from None


def session(message, ctx) -> dict:
    """A session's fields, a map kept as MessagePack under `session:<id>`
    in the store the message names, {"store": name, "id": text, "set":
    map}. With `set`, merges those fields into the stored ones and replies
    with the result; without, replies with what is stored (an empty map for
    a new session). The merge is a compare-and-swap, so two messages
    setting different fields of one session at once both land."""
    if (
        not isinstance(message, dict)
        or not isinstance(message.get("store"), str)
        or not isinstance(message.get("id"), str)
        or not isinstance(message.get("set", {}), dict)
    ):
        raise Error('session: expected {"store": name, "id": text, "set": map (optional)}')
    key = f"session:{message['id']}"

    def fields(stored: bytes | None) -> dict:
        if stored is None:
            return {}
        try:
            value = decode(stored)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise Error(f"session: {key} holds no MessagePack map")
        return value

    def merged(stored: bytes | None) -> bytes:
        return encode(fields(stored) | message["set"])

    try:
        with Store(message["store"]) as sessions:
            if "set" in message:
                return Raw(sessions.update(key, merged))
            return fields(sessions.get(key))
    except StoreError as e:
        raise Error(f"session: {e}") from None


def fetch(message, ctx) -> dict:
    """GETs the URL the message holds, {"url": "http://...", "headers"?:
    {name: value}}, and replies with {"status": n, "headers": {name: value},
    "body": bytes}. The host allows only what this handler's
    `allowed_outbound_hosts` lists; a request that gets no response replies
    `fetch: <the wasi:http error-code's case>` (`fetch: HttpRequestDenied`),
    as the C, Zig and JavaScript examples do."""
    if not isinstance(message, dict) or not isinstance(message.get("url"), str):
        raise Error('fetch: expected {"url": "http://...", "headers"?: {name: value}}')
    # An event loop over wasi:io/poll: `handle` is synchronous, the
    # helpers of poll_loop are coroutines.
    loop = poll_loop.PollLoop()
    asyncio.set_event_loop(loop)
    try:
        status, headers, body = loop.run_until_complete(get(message["url"], message.get("headers") or {}))
    except wit_world.Err as e:
        # The bindings name each case's class `ErrorCode_<Case>`.
        raise Error(f"fetch: {type(e.value).__name__.removeprefix('ErrorCode_')}") from None
    finally:
        loop.close()
    return {"status": status, "headers": headers, "body": body}


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


OPERATIONS = {
    "identity": identity,
    "sum": sum_numbers,
    "caller": who_called,
    "relay": relay,
    "fetch": fetch,
    "count": count,
    "session": session,
    "samples": sample,
}
