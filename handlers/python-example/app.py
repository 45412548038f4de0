"""An arrpc-host handler in Python: echo, sum and caller, chosen by the served name.

componentize-py turns this module into a WebAssembly component implementing
the `handler` world of wit/handler.wit. The same component is served under
several names (see README.md): a name ending in "echo" returns the payload
unchanged, one ending in "sum" adds up numbers with the same input, output
and error texts as the Rust `sum` handler, one ending in "caller" replies
with who called, as the host verified it, asked of the host through the
imported `client` interface.
"""

import sys

import msgpack
import wit_world
from wit_world.imports import client, types

EXPECTED = 'an array of numbers or {"numbers": [...]}'


class WitWorld(wit_world.WitWorld):
    def handle(self, ctx: types.Context, payload: bytes) -> bytes:
        if ctx.handler.endswith("echo"):
            return payload
        if ctx.handler.endswith("sum"):
            return sum_numbers(payload)
        if ctx.handler.endswith("caller"):
            return who_called(client.caller())
        # stderr goes to the host's log, tagged with handler and request id.
        print(f"no operation for the name {ctx.handler!r}", file=sys.stderr)
        raise wit_world.Err(f"{ctx.handler}: serve this component under a name ending in echo, sum or caller")


def who_called(caller: types.Identity | None) -> bytes:
    """The caller's SPIFFE ID (None when the certificate carries none) and
    DNS names; nil when the host verified no client certificate (plain TCP,
    or TLS without one)."""
    if caller is None:
        return msgpack.packb(None)
    return msgpack.packb({"spiffe_id": caller.spiffe_id, "dns_names": caller.dns_names})


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
