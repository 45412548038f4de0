"""`{{name}}`: an arrpc-host handler, built with componentize-py.

`payload` is one MessagePack value, the bytes the client sent; return one
MessagePack value. Decode with msgpack's pure-Python build (install it with
MSGPACK_PUREPYTHON=1 pip install --no-binary msgpack --target deps msgpack
and add `-p deps` in build.sh). `raise wit_world.Err("text")` replies with
an error; print() goes to the host's log. Who sent the message, the
handler asks the host (`from wit_world.imports import client`):
`client.caller()` is who called when the host verified a client
certificate (`.spiffe_id`, a str or None, and `.dns_names`), None
otherwise; `client.peer()` is the client's address. Another arrpc service,
listed in the handler's `upstreams` (`from wit_world.imports import
upstream`): `upstream.call(name, method, params)` sends MessagePack params
and returns the result's bytes, or raises wit_world.Err whose value says
whether the call may have run. HTTP requests: handlers/python-example shows
the world and build flags they need.
"""

import wit_world
from wit_world.imports import types


class WitWorld(wit_world.WitWorld):
    def handle(self, ctx: types.Context, payload: bytes) -> bytes:
        return payload
