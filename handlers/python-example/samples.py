"""Python objects a handler may return that no message decodes to, by
name, for the example's `samples` operation: tuples, a bytearray, an
`IntEnum`, ints at every encoding's edge, map keys of every type, strs
and arrays past each length form, and values the reply cannot carry. The
tests pack the same objects with msgpack-python natively and compare, so
this module is plain Python, importable outside the component.
"""

import enum


class Color(enum.IntEnum):
    RED = 1


SAMPLES = {
    "tuple": lambda: (1, "two", (3.5, None, [True, False])),
    "bytearray": lambda: {"empty": bytearray(), "bytes": bytearray(b"\x00\xff" * 200)},
    "ints": lambda: [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, 2**64 - 1, -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63)],
    "floats": lambda: [0.1, -0.0, 1e300, 5e-324, float("inf"), float("-inf")],
    "keys": lambda: {1: "int", None: "nil", b"k": "bin", True: "bool", 2.5: "float", (1, "t"): "tuple", "s": "str"},
    "strs": lambda: ["", "é", "😀" * 3, "x" * 31, "x" * 32, "y" * 255, "y" * 256, "z" * 65535, "z" * 65536],
    "lengths": lambda: [list(range(15)), list(range(16)), list(range(65535)), list(range(65536)), {i: i for i in range(16)}, {i: i for i in range(65536)}],
    "subclass": lambda: [Color.RED, {"color": Color.RED}],
    "too-big": lambda: [2**64],
    "too-small": lambda: {"n": -(2**63) - 1},
    "surrogate": lambda: ["\ud800"],
    "set": lambda: [{1, 2}],
}
