"""`{{name}}`: an arrpc-host handler, built with componentize-py.

`payload` is one MessagePack value, the bytes the client sent; return one
MessagePack value. Decode with msgpack's pure-Python build (install it with
MSGPACK_PUREPYTHON=1 pip install --no-binary msgpack --target deps msgpack
and add `-p deps` in build.sh). `raise wit_world.Err("text")` replies with
an error; print() goes to the host's log. `ctx.caller` is who called when
the host verified a client certificate (`ctx.caller.spiffe_id`, a str,
empty for none, and `ctx.caller.dns_names`), None otherwise.
"""

import wit_world
from wit_world.imports import types


class WitWorld(wit_world.WitWorld):
    def handle(self, ctx: types.Context, payload: bytes) -> bytes:
        return payload
