/*
 * _arrpc_unpack: MessagePack to Python objects, in C, inside a component.
 *
 * `unpackb(payload)` returns what msgpack-python's
 * `unpackb(payload, raw=False, strict_map_key=False)` returns, for every
 * message made of nil, booleans, integers, floats, UTF-8 strs, bins,
 * arrays and maps with scalar keys. For anything else (an ext, a str that
 * is not UTF-8, an array or map as a map key, nesting deeper than the
 * host's 512, malformed or trailing bytes) it returns NotImplemented and
 * arrpc_handler.py takes the way it took before: the host's codec, whose
 * answer (or error text) is the reference. So this file only ever makes
 * objects that path would make, one C loop for what costs most, arrays of
 * small integers, with no host call and no marshal bytes in between.
 *
 * It is built without CPython's headers (none exist for this target):
 * the declarations it needs are written out in _arrpc_python.h and below,
 * from CPython's Include/ (all in the stable ABI), with the layout of a
 * list, which module init checks before it is relied on. build-ext.sh
 * compiles it with Zig's clang as a position-independent wasm32 library
 * that componentize-py links into the component.
 */

#include "_arrpc_python.h"

typedef unsigned char byte;

int PyBytes_AsStringAndSize(PyObject *bytes, char **buffer, Py_ssize_t *length);
PyObject *PyLong_FromLong(long value);
PyObject *PyLong_FromLongLong(long long value);
PyObject *PyLong_FromUnsignedLongLong(unsigned long long value);
PyObject *PyFloat_FromDouble(double value);
PyObject *PyUnicode_DecodeUTF8(const char *s, Py_ssize_t size, const char *errors);
PyObject *PyBytes_FromStringAndSize(const char *s, Py_ssize_t size);
int PyDict_SetItem(PyObject *dict, PyObject *key, PyObject *value);
void PyErr_Clear(void);

/* The host's limit (arrpc_codec::MAX_DEPTH): a container opened at this
 * depth goes the host's way, which refuses it. */
#define MAX_DEPTH 512

/* What `read` returns, besides an object or NULL (a Python exception),
 * when the message is not one this file makes objects for. */
static PyObject other_way;
#define OTHER_WAY (&other_way)

/* Whether items may be written straight into a new list. */
static int list_layout_known;

struct reader {
    const byte *at;
    const byte *end;
};

static Py_ssize_t left(const struct reader *r) { return r->end - r->at; }

static unsigned long long big_endian(const byte *p, int n) {
    unsigned long long v = 0;
    for (int i = 0; i < n; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

/* `n` bytes, or NULL when fewer are left. */
static const byte *take(struct reader *r, Py_ssize_t n) {
    if (n < 0 || left(r) < n) {
        return 0;
    }
    const byte *p = r->at;
    r->at += n;
    return p;
}

/* A length of `n` big-endian bytes, or -1 when they are missing. */
static Py_ssize_t length(struct reader *r, int n) {
    const byte *p = take(r, n);
    return p ? (Py_ssize_t)big_endian(p, n) : -1;
}

static PyObject *read(struct reader *r, unsigned depth, int key);

static PyObject *str(struct reader *r, Py_ssize_t n) {
    const byte *p = n < 0 ? 0 : take(r, n);
    if (!p) {
        return OTHER_WAY;
    }
    PyObject *s = PyUnicode_DecodeUTF8((const char *)p, n, 0);
    if (!s) {
        /* Not UTF-8: msgpack-python raises, as the other way does. */
        PyErr_Clear();
        return OTHER_WAY;
    }
    return s;
}

static PyObject *bin(struct reader *r, Py_ssize_t n) {
    const byte *p = n < 0 ? 0 : take(r, n);
    return p ? PyBytes_FromStringAndSize((const char *)p, n) : OTHER_WAY;
}

/* An integer of at most 16 bits (most are), made without a call to
 * `read`, and `made` set (NULL then means a Python exception); for any
 * other value NULL, `made` unset and nothing read. */
static PyObject *small_int(struct reader *r, int *made) {
    const byte *p = r->at;
    if (p == r->end) {
        return 0;
    }
    byte m = p[0];
    if (m <= 0x7f) {
        r->at += 1;
    } else if (m >= 0xe0) {
        r->at += 1;
        *made = 1;
        return PyLong_FromLong((signed char)m);
    } else if (m == 0xcc && left(r) >= 2) {
        r->at += 2;
        m = p[1];
    } else if (m == 0xcd && left(r) >= 3) {
        r->at += 3;
        *made = 1;
        return PyLong_FromLong(p[1] << 8 | p[2]);
    } else {
        return 0;
    }
    *made = 1;
    return PyLong_FromLong(m);
}

/* An array item or a map value at `depth`: a small integer straight from
 * its bytes, anything else through `read`. */
static inline PyObject *item(struct reader *r, unsigned depth) {
    int made = 0;
    PyObject *value = small_int(r, &made);
    return made ? value : read(r, depth, 0);
}

static PyObject *array(struct reader *r, Py_ssize_t n, unsigned depth) {
    /* Every item takes a byte at least: a length beyond that is a lie. */
    if (n < 0 || n > left(r)) {
        return OTHER_WAY;
    }
    PyObject *list = PyList_New(n);
    if (!list) {
        return 0;
    }
    PyObject **items = ((PyListObject *)list)->ob_item;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *value = item(r, depth + 1);
        if (!value || value == OTHER_WAY) {
            Py_DecRef(list);
            return value;
        }
        items[i] = value;
    }
    return list;
}

static PyObject *map(struct reader *r, Py_ssize_t n, unsigned depth) {
    if (n < 0 || n > left(r) / 2) {
        return OTHER_WAY;
    }
    PyObject *dict = PyDict_New();
    if (!dict) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = read(r, depth + 1, 1);
        if (!k || k == OTHER_WAY) {
            Py_DecRef(dict);
            return k;
        }
        PyObject *v = item(r, depth + 1);
        if (!v || v == OTHER_WAY) {
            Py_DecRef(k);
            Py_DecRef(dict);
            return v;
        }
        int failed = PyDict_SetItem(dict, k, v);
        Py_DecRef(k);
        Py_DecRef(v);
        if (failed) {
            Py_DecRef(dict);
            return 0;
        }
    }
    return dict;
}

static PyObject *container(struct reader *r, Py_ssize_t n, unsigned depth, int key, int is_map) {
    /* msgpack-python cannot hash a list or dict key; the host refuses
     * nesting past its limit. */
    if (key || depth == MAX_DEPTH) {
        return OTHER_WAY;
    }
    return is_map ? map(r, n, depth) : array(r, n, depth);
}

/* The next value: an object, NULL with a Python exception set, or
 * OTHER_WAY. */
static PyObject *read(struct reader *r, unsigned depth, int key) {
    const byte *p = take(r, 1);
    if (!p) {
        return OTHER_WAY;
    }
    byte m = p[0];
    if (m <= 0x7f) {
        return PyLong_FromLong(m);
    }
    if (m >= 0xe0) {
        return PyLong_FromLong((signed char)m);
    }
    if (m >= 0xa0 && m <= 0xbf) {
        return str(r, m & 0x1f);
    }
    if (m >= 0x90 && m <= 0x9f) {
        return container(r, m & 0x0f, depth, key, 0);
    }
    if (m >= 0x80 && m <= 0x8f) {
        return container(r, m & 0x0f, depth, key, 1);
    }
    /* The fixed-size values: their width, then what they are. */
    static const byte width[0x20] = {
        [0x0a] = 4, [0x0b] = 8,                           /* float 32, 64 */
        [0x0c] = 1, [0x0d] = 2, [0x0e] = 4, [0x0f] = 8,   /* uint 8..64 */
        [0x10] = 1, [0x11] = 2, [0x12] = 4, [0x13] = 8,   /* int 8..64 */
    };
    byte n = width[m - 0xc0];
    const byte *v = n ? take(r, n) : 0;
    if (n && !v) {
        return OTHER_WAY;
    }
    switch (m) {
    case 0xc0:
        Py_IncRef(none);
        return none;
    case 0xc2:
        Py_IncRef(py_false);
        return py_false;
    case 0xc3:
        Py_IncRef(py_true);
        return py_true;
    case 0xca: {
        union { unsigned int u; float f; } bits = {(unsigned int)big_endian(v, 4)};
        return PyFloat_FromDouble(bits.f);
    }
    case 0xcb: {
        union { unsigned long long u; double f; } bits = {big_endian(v, 8)};
        return PyFloat_FromDouble(bits.f);
    }
    case 0xcc:
    case 0xcd:
        return PyLong_FromLong((long)big_endian(v, n));
    case 0xce:
    case 0xcf:
        return PyLong_FromUnsignedLongLong(big_endian(v, n));
    case 0xd0:
        return PyLong_FromLong((signed char)v[0]);
    case 0xd1:
        return PyLong_FromLong((short)big_endian(v, 2));
    case 0xd2:
        return PyLong_FromLong((int)big_endian(v, 4));
    case 0xd3:
        return PyLong_FromLongLong((long long)big_endian(v, 8));
    case 0xc4:
    case 0xc5:
    case 0xc6:
        return bin(r, length(r, 1 << (m - 0xc4)));
    case 0xd9:
    case 0xda:
    case 0xdb:
        return str(r, length(r, 1 << (m - 0xd9)));
    case 0xdc:
    case 0xdd:
        return container(r, length(r, m == 0xdc ? 2 : 4), depth, key, 0);
    case 0xde:
    case 0xdf:
        return container(r, length(r, m == 0xde ? 2 : 4), depth, key, 1);
    default:
        /* ext (msgpack-python gives an ExtType or a Timestamp), or the
         * reserved byte 0xc1. */
        return OTHER_WAY;
    }
}

static PyObject *unpackb(PyObject *module, PyObject *payload) {
    (void)module;
    char *data;
    Py_ssize_t size;
    if (PyBytes_AsStringAndSize(payload, &data, &size) < 0) {
        return 0;
    }
    PyObject *value = OTHER_WAY;
    if (list_layout_known) {
        struct reader r = {(const byte *)data, (const byte *)data + size};
        value = read(&r, 0, 0);
        if (value && value != OTHER_WAY && r.at != r.end) {
            /* Bytes after the value: the other way refuses them. */
            Py_DecRef(value);
            value = OTHER_WAY;
        }
    }
    if (value == OTHER_WAY) {
        Py_IncRef(not_implemented);
        return not_implemented;
    }
    return value;
}

MODULE_OF_ONE_FUNCTION(
    "_arrpc_unpack", unpackb,
    "unpackb(payload: bytes) -> object: the MessagePack value as msgpack-python's "
    "unpackb(raw=False, strict_map_key=False) gives it, or NotImplemented for a "
    "message to decode the other way.",
    "MessagePack to Python objects in C, for arrpc_handler.decode.");

__attribute__((visibility("default"))) PyObject *PyInit__arrpc_unpack(void) {
    get_constants();
    list_layout_known = list_layout_checked();
    return PyModule_Create2(&module, API_VERSION);
}
