"""Serves Python arrpc.Server on 127.0.0.1 with a handler that wraps each
message as {"seed": message}. "seed" here, in the reply and in this file's
name, means the Python arrpc package (PyPI arrpc==0.5.0).

usage: seed_server.py PORT [--cert F --key F] [--secret-env NAME]
"""
import argparse
import os

import arrpc

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("--cert")
parser.add_argument("--key")
parser.add_argument("--secret-env")
args = parser.parse_args()


def handler(message):
    return {"seed": message}


secret = os.environ[args.secret_env] if args.secret_env else None
arrpc.Server("127.0.0.1", args.port, handler, tls_certfile=args.cert, tls_keyfile=args.key,
             auth_secret=secret).start()
