"""Checks arrpc-codec against msgpack-python's C extension and CPython's
marshal, for tests/codec.rs.

stdin: lines `<msgpack hex> <marshal hex or ->`, what the host made of
each value (`-`: left to msgpack, which tests/codec.rs checks was right).
`marshal.loads` of the host's bytes must be exactly (types, values, key
order) what `unpackb(raw=False, strict_map_key=False)` returns. stdout:
`FAIL <why>` lines, then for every value unpackb decodes and for a few
objects of Python's own, `dump <marshal.dumps(obj, 2) hex> <packb(obj) hex
or !error text>`, for the reverse direction.
"""

import marshal
import math
import sys

import msgpack


def same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a.items(), b.items()))
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def dump(obj):
    try:
        dumped = marshal.dumps(obj, 2)
    except ValueError:
        # ExtType and Timestamp: the SDK packs those with msgpack itself.
        return
    try:
        packed = msgpack.packb(obj).hex()
    except Exception as e:
        packed = "!" + str(e)
    print("dump", dumped.hex(), packed)


for line in sys.stdin:
    packed_hex, marshal_hex = line.split()
    packed = bytes.fromhex(packed_hex)
    try:
        expected = msgpack.unpackb(packed, raw=False, strict_map_key=False)
    except Exception as e:
        if marshal_hex != "-":
            print(f"FAIL {packed_hex}: unpackb refuses it ({e}) but the host wrote marshal")
        continue
    if marshal_hex == "-":
        dump(expected)
        continue
    got = marshal.loads(bytes.fromhex(marshal_hex))
    if not same(got, expected):
        print(f"FAIL {packed_hex}: marshal gives {got!r}, unpackb {expected!r}")
        continue
    dump(expected)

# Python's own: tuples, subclasses of nothing, and what packb refuses.
for obj in [(1, (2, "x")), {(1, 2): [3]}, {1, 2}, frozenset(), 1j, 2**64, -(2**63) - 1, 2**64 - 1, "\ud800", bytearray(b"ab"), [0.1, -0.0, float("inf")]]:
    dump(obj)
