/*
 * _arrpc_pack: Python objects to MessagePack, in C, inside a component.
 *
 * `packb(value)` returns the bytes msgpack-python's `packb(value)` writes,
 * for values made only of None, bool, int from -2**63 to 2**64 - 1,
 * float, str, bytes, bytearray, list, tuple and dict, each of exactly that
 * type. For anything else (a subclass, another type, an int out of range,
 * a str with a lone surrogate, nesting at the host's 512) it returns
 * NotImplemented, and arrpc_handler.py encodes the value the way it did
 * before: marshal through the host's codec, or msgpack's pure-Python
 * build, which give the same bytes or the error the reply should carry.
 * Either way the host checks a reply is exactly one MessagePack value
 * before it leaves.
 *
 * It is built without CPython's headers (none exist for this target):
 * the declarations it needs are in _arrpc_python.h and below, from
 * CPython's Include/ (all in the stable ABI). The types it packs are
 * taken from objects made at import, not from exported data. build-ext.sh
 * compiles it with Zig's clang as a position-independent wasm32 library
 * that componentize-py links into the component.
 */

#include "_arrpc_python.h"

typedef unsigned char byte;

PyObject *PyLong_FromLong(long value);
long long PyLong_AsLongLongAndOverflow(PyObject *value, int *overflow);
unsigned long long PyLong_AsUnsignedLongLong(PyObject *value);
PyObject *PyFloat_FromDouble(double value);
double PyFloat_AsDouble(PyObject *value);
PyObject *PyUnicode_FromStringAndSize(const char *s, Py_ssize_t size);
const char *PyUnicode_AsUTF8AndSize(PyObject *value, Py_ssize_t *size);
PyObject *PyBytes_FromStringAndSize(const char *s, Py_ssize_t size);
int PyBytes_AsStringAndSize(PyObject *bytes, char **buffer, Py_ssize_t *length);
PyObject *PyByteArray_FromStringAndSize(const char *s, Py_ssize_t size);
char *PyByteArray_AsString(PyObject *value);
Py_ssize_t PyByteArray_Size(PyObject *value);
PyObject *PyTuple_New(Py_ssize_t size);
PyObject *PyTuple_GetItem(PyObject *tuple, Py_ssize_t index);
Py_ssize_t PyTuple_Size(PyObject *tuple);
int PyDict_Next(PyObject *dict, Py_ssize_t *pos, PyObject **key, PyObject **value);
Py_ssize_t PyDict_Size(PyObject *dict);
PyObject *PyErr_Occurred(void);
void PyErr_Clear(void);
void *PyMem_Realloc(void *p, size_t size);
void PyMem_Free(void *p);
void *memcpy(void *dst, const void *src, size_t n);

/* The host's limit (arrpc_codec::MAX_DEPTH). */
#define MAX_DEPTH 512

/* How `pack` ends, besides having written the value. */
enum { PACKED, OTHER_WAY, FAILED };

/* Whether a list's items may be read straight from it. */
static int list_layout_known;
static void *bool_type, *int_type, *float_type, *str_type, *bytes_type, *bytearray_type,
    *list_type, *tuple_type, *dict_type;

/* The bytes written so far. */
struct out {
    byte *at;
    size_t len;
    size_t cap;
};

/* Room for `n` more bytes, or FAILED (MemoryError set by PyMem). */
static int room(struct out *o, size_t n) {
    if (o->cap - o->len >= n) {
        return PACKED;
    }
    size_t cap = o->cap ? o->cap : 256;
    while (cap - o->len < n) {
        cap *= 2;
    }
    byte *at = PyMem_Realloc(o->at, cap);
    if (!at) {
        return FAILED;
    }
    o->at = at;
    o->cap = cap;
    return PACKED;
}

/* A marker then `n` big-endian bytes of `v`. */
static int put(struct out *o, byte marker, unsigned long long v, int n) {
    if (room(o, 1 + n) != PACKED) {
        return FAILED;
    }
    byte *p = o->at + o->len;
    p[0] = marker;
    for (int i = n; i > 0; i--) {
        p[i] = (byte)v;
        v >>= 8;
    }
    o->len += 1 + n;
    return PACKED;
}

static int put_bytes(struct out *o, const void *p, size_t n) {
    if (room(o, n) != PACKED) {
        return FAILED;
    }
    memcpy(o->at + o->len, p, n);
    o->len += n;
    return PACKED;
}

/* A length in the smallest of the three forms msgpack-python picks: fix
 * (when `fix_max` allows), 8 bits (when `wide8` is not 0), 16, 32. */
static int length(struct out *o, Py_ssize_t n, byte fix, Py_ssize_t fix_max, byte wide8, byte wide16) {
    if ((size_t)n > 0xffffffffu) {
        return OTHER_WAY;
    }
    if (n <= fix_max) {
        return put(o, fix | (byte)n, 0, 0);
    }
    if (wide8 && n <= 0xff) {
        return put(o, wide8, (unsigned long long)n, 1);
    }
    if (n <= 0xffff) {
        return put(o, wide16, (unsigned long long)n, 2);
    }
    return put(o, wide16 + 1, (unsigned long long)n, 4);
}

static int integer(struct out *o, PyObject *value) {
    int overflow = 0;
    long long n = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow > 0) {
        unsigned long long u = PyLong_AsUnsignedLongLong(value);
        if (PyErr_Occurred()) {
            /* Past 2**64 - 1: the other way raises what the reply says. */
            PyErr_Clear();
            return OTHER_WAY;
        }
        return put(o, 0xcf, u, 8);
    }
    if (overflow < 0) {
        return OTHER_WAY;
    }
    if (n >= 0) {
        if (n < 0x80) {
            return put(o, (byte)n, 0, 0);
        }
        if (n <= 0xff) {
            return put(o, 0xcc, (unsigned long long)n, 1);
        }
        if (n <= 0xffff) {
            return put(o, 0xcd, (unsigned long long)n, 2);
        }
        if (n <= 0xffffffffll) {
            return put(o, 0xce, (unsigned long long)n, 4);
        }
        return put(o, 0xcf, (unsigned long long)n, 8);
    }
    if (n >= -32) {
        return put(o, (byte)n, 0, 0);
    }
    if (n >= -0x80) {
        return put(o, 0xd0, (unsigned long long)n, 1);
    }
    if (n >= -0x8000) {
        return put(o, 0xd1, (unsigned long long)n, 2);
    }
    if (n >= -0x80000000ll) {
        return put(o, 0xd2, (unsigned long long)n, 4);
    }
    return put(o, 0xd3, (unsigned long long)n, 8);
}

static int pack(struct out *o, PyObject *value, unsigned depth);

/* `n` items, from a list's array or a tuple. */
static int items(struct out *o, PyObject *const *array, PyObject *tuple, Py_ssize_t n, unsigned depth) {
    int done = length(o, n, 0x90, 15, 0, 0xdc);
    for (Py_ssize_t i = 0; done == PACKED && i < n; i++) {
        done = pack(o, array ? array[i] : PyTuple_GetItem(tuple, i), depth + 1);
    }
    return done;
}

static int pack(struct out *o, PyObject *value, unsigned depth) {
    void *type = value->ob_type;
    if (type == int_type) {
        return integer(o, value);
    }
    if (type == str_type) {
        Py_ssize_t n;
        const char *utf8 = PyUnicode_AsUTF8AndSize(value, &n);
        if (!utf8) {
            /* A lone surrogate: the other way raises what the reply says. */
            PyErr_Clear();
            return OTHER_WAY;
        }
        int done = length(o, n, 0xa0, 31, 0xd9, 0xda);
        return done == PACKED ? put_bytes(o, utf8, (size_t)n) : done;
    }
    if (type == float_type) {
        union { double f; unsigned long long u; } bits = {PyFloat_AsDouble(value)};
        return put(o, 0xcb, bits.u, 8);
    }
    if (value == none) {
        return put(o, 0xc0, 0, 0);
    }
    if (type == bool_type) {
        return put(o, value == py_true ? 0xc3 : 0xc2, 0, 0);
    }
    if (type == bytes_type || type == bytearray_type) {
        char *data;
        Py_ssize_t n;
        if (type == bytes_type) {
            PyBytes_AsStringAndSize(value, &data, &n);
        } else {
            data = PyByteArray_AsString(value);
            n = PyByteArray_Size(value);
        }
        int done = length(o, n, 0, -1, 0xc4, 0xc5);
        return done == PACKED ? put_bytes(o, data, (size_t)n) : done;
    }
    if (type != list_type && type != tuple_type && type != dict_type) {
        return OTHER_WAY;
    }
    if (depth == MAX_DEPTH) {
        return OTHER_WAY;
    }
    if (type == list_type) {
        PyListObject *list = (PyListObject *)value;
        return items(o, list->ob_item, 0, list->ob_size, depth);
    }
    if (type == tuple_type) {
        return items(o, 0, value, PyTuple_Size(value), depth);
    }
    int done = length(o, PyDict_Size(value), 0x80, 15, 0, 0xde);
    Py_ssize_t at = 0;
    PyObject *k, *v;
    while (done == PACKED && PyDict_Next(value, &at, &k, &v)) {
        done = pack(o, k, depth + 1);
        if (done == PACKED) {
            done = pack(o, v, depth + 1);
        }
    }
    return done;
}

static PyObject *packb(PyObject *module, PyObject *value) {
    (void)module;
    if (!list_layout_known) {
        Py_IncRef(not_implemented);
        return not_implemented;
    }
    struct out o = {0, 0, 0};
    int done = pack(&o, value, 0);
    PyObject *packed = 0;
    if (done == PACKED) {
        packed = PyBytes_FromStringAndSize((const char *)o.at, (Py_ssize_t)o.len);
    } else if (done == OTHER_WAY) {
        Py_IncRef(not_implemented);
        packed = not_implemented;
    }
    PyMem_Free(o.at);
    return packed;
}

MODULE_OF_ONE_FUNCTION(
    "_arrpc_pack", packb,
    "packb(value) -> bytes: what msgpack-python's packb(value) writes, or NotImplemented "
    "for a value to encode the other way.",
    "Python objects to MessagePack in C, for arrpc_handler.encode.");

/* The type of a new object `made`, which is then dropped. */
static void *type_of(PyObject *made) {
    if (!made) {
        return 0;
    }
    void *type = made->ob_type;
    Py_DecRef(made);
    return type;
}

__attribute__((visibility("default"))) PyObject *PyInit__arrpc_pack(void) {
    get_constants();
    bool_type = py_true->ob_type;
    int_type = type_of(PyLong_FromLong(1 << 20));
    float_type = type_of(PyFloat_FromDouble(0.5));
    str_type = type_of(PyUnicode_FromStringAndSize("s", 1));
    bytes_type = type_of(PyBytes_FromStringAndSize("b", 1));
    bytearray_type = type_of(PyByteArray_FromStringAndSize("b", 1));
    list_type = type_of(PyList_New(0));
    tuple_type = type_of(PyTuple_New(0));
    dict_type = type_of(PyDict_New());
    if (!int_type || !float_type || !str_type || !bytes_type || !bytearray_type || !list_type ||
        !tuple_type || !dict_type) {
        return 0;
    }
    list_layout_known = list_layout_checked();
    return PyModule_Create2(&module, API_VERSION);
}
