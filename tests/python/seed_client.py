"""Runs Python arrpc.Client calls and prints their outcomes as JSON.

"seed" in this file's name means the Python arrpc package (PyPI arrpc==0.5.0).

argv[1] is a JSON list of calls: {"port": int, "message": any, "kwargs": {...}}.
Every call uses a fresh Client, as its users must for TLS (the Python arrpc
package's TLS client closes its socket after one send). Prints a JSON list with
{"ok": reply} or {"error": exception class name, "message": text} per call.
"""
import json
import sys

import arrpc
from arrpc.error import AuthException, ConnectException, RpcException, RpcTimeoutException

outcomes = []
for call in json.loads(sys.argv[1]):
    client = arrpc.Client("127.0.0.1", call["port"], timeout=20, con_max_retries=2, **call.get("kwargs", {}))
    try:
        outcomes.append({"ok": client.send(call["message"])})
    except (AuthException, ConnectException, RpcException, RpcTimeoutException) as e:
        outcomes.append({"error": type(e).__name__, "message": str(e)})
print(json.dumps(outcomes))
