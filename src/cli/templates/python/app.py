"""`{{name}}`: an arrpc-host handler, built with componentize-py.

`handle(message, ctx)` gets the message as Python objects, as the Python
arrpc package's handler does (msgpack-python's types: dict, list, str,
bytes, int, float, bool, None), and returns the reply as objects.
`raise Error("text")` replies with an error text; any other exception
replies with its type and text, and its traceback goes to the host's log,
as print() does. `ctx.handler` is the name this handler is served under,
`ctx.request_id` the message's number in the host's log.

Who sent the message, the handler asks the host (`from
wit_world.imports import client`): `client.caller()` is who called when the
host verified a client certificate (`.spiffe_id`, a str or None, and
`.dns_names`), None otherwise; `client.peer()` is the client's address.
Another arrpc service, listed in the handler's `upstreams` (`from
wit_world.imports import upstream`): `upstream.call(name, method,
encode(params))` returns the result's MessagePack bytes (`decode` them), or
raises wit_world.Err whose value says whether the call may have run. HTTP
requests: handlers/python-example in the arrpc-host repository shows the
world and build flags they need.
"""

from arrpc_handler import Error, serve


def handle(message, ctx):
    return message


WitWorld = serve(handle)
