"""Objects in, objects out: an arrpc-host handler written as
`def handle(message, ctx)`, as the Python arrpc package's handler is.

    import arrpc_handler

    def handle(message, ctx):          # message: dict, list, int, str, ...
        return {"sum": sum(message)}   # any object msgpack can pack

    WitWorld = arrpc_handler.serve(handle)

The SDK's C extensions, compiled into the component, make each
message's objects from its MessagePack (`_arrpc_unpack`) and the reply's
MessagePack from the objects returned (`_arrpc_pack`). The types are
msgpack-python's, as `unpackb(raw=False, strict_map_key=False)` gives them
and `packb` takes them (docs/handlers.md has the table). What they leave
(an ext, a str that is not UTF-8, a list as a map key, a subclass, an
`ExtType` or a `Timestamp`) goes through the host's codec
(`arrpc:handler/codec`: marshal, transcoded natively) or msgpack's
pure-Python build instead, with the same result, slower.

`raise arrpc_handler.Error("text")` replies with that error text; any
other exception replies with its type and text, and its traceback goes to
the host's log. Return `Raw(b)` to reply with the MessagePack bytes `b` as
they are, and see `ctx` (`handler`, `request_id`, `timeout_ms`,
`traceparent`) for what the host knows of the message.

Importing this module imports `_arrpc_alloc` (_arrpc_alloc.c, which
build.sh compiles), which pools CPython's small objects as pymalloc would:
componentize-py's CPython has no pymalloc, and making and freeing the
objects of a message in malloc cost more than decoding it.
"""

import marshal
import sys
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple

import _arrpc_alloc  # noqa: F401  (imported for its effect)
import _arrpc_pack
import _arrpc_unpack
import msgpack
import wit_world
from wit_world.imports import codec

# The error a handler raises to reply with a text, as the bindings name it.
Error = wit_world.Err


class Raw(NamedTuple):
    """A reply already encoded: exactly one MessagePack value, sent as it is."""

    data: bytes


def decode(payload: bytes) -> Any:
    """One MessagePack value as Python objects, as msgpack-python's
    `unpackb(payload, raw=False, strict_map_key=False)` returns them."""
    value = _arrpc_unpack.unpackb(payload)
    if value is not NotImplemented:
        return value
    # What the C decoder leaves: the host's codec refuses a malformed
    # value with its reason, and says which values msgpack must decode.
    try:
        dumped = codec.msgpack_to_marshal(payload)
    except wit_world.Err as e:
        raise ValueError(f"invalid MessagePack: {e.value}") from None
    if dumped is None:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    return marshal.loads(dumped)


def encode(value: Any) -> bytes:
    """`value` as MessagePack, as msgpack-python's `packb(value)` writes it."""
    if type(value) is Raw:
        return value.data
    packed = _arrpc_pack.packb(value)
    if packed is not NotImplemented:
        return packed
    try:
        # Version 2: no back-references, which the host does not read.
        dumped = marshal.dumps(value, 2)
    except ValueError:
        # A type marshal does not know (a subclass, ExtType, Timestamp).
        return msgpack.packb(value)
    try:
        return codec.marshal_to_msgpack(dumped)
    except wit_world.Err as e:
        raise TypeError(e.value) from None


def reply(handle: Callable[[Any, Any], Any], ctx, payload: bytes) -> bytes:
    """Runs `handle` on the decoded message and encodes what it returns."""
    try:
        return encode(handle(decode(payload), ctx))
    except wit_world.Err:
        raise
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        raise wit_world.Err(f"{type(e).__name__}: {e}") from None


def serve(handle: Callable[[Any, Any], Any]) -> type:
    """The `WitWorld` class componentize-py looks for in the app module,
    calling `handle(message, ctx)` for each message."""

    class WitWorld(wit_world.WitWorld):
        def handle(self, ctx, payload: bytes) -> bytes:
            return reply(handle, ctx, payload)

    return WitWorld
