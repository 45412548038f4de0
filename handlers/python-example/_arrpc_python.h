/*
 * What the Python SDK's C extensions (_arrpc_alloc.c, _arrpc_unpack.c)
 * need of CPython's C API, written out by hand: no CPython headers exist
 * for componentize-py's wasm32 target. The types and constants are from
 * CPython's Include/ (object.h, moduleobject.h, methodobject.h,
 * modsupport.h); all are part of the stable ABI or unchanged since 3.5.
 */

#ifndef ARRPC_PYTHON_H
#define ARRPC_PYTHON_H

typedef __SIZE_TYPE__ size_t;
typedef __INTPTR_TYPE__ Py_ssize_t;
typedef __UINTPTR_TYPE__ uintptr_t;

typedef struct {
    Py_ssize_t ob_refcnt;
    void *ob_type;
} PyObject;

typedef struct {
    const char *ml_name;
    PyObject *(*ml_meth)(PyObject *, PyObject *);
    int ml_flags;
    const char *ml_doc;
} PyMethodDef;

#define METH_O 0x0008

typedef struct {
    PyObject ob_base;
    void *m_init;
    Py_ssize_t m_index;
    PyObject *m_copy;
} PyModuleDef_Base;

typedef struct {
    PyModuleDef_Base m_base;
    const char *m_name;
    const char *m_doc;
    Py_ssize_t m_size;
    PyMethodDef *m_methods;
    void *m_slots;
    void *m_traverse;
    void *m_clear;
    void *m_free;
} PyModuleDef;

/* A static module definition's header. Immortal, as PyModuleDef_HEAD_INIT
 * makes a static object on 32-bit targets
 * (_Py_STATIC_IMMORTAL_INITIAL_REFCNT). */
#define MODULE_DEF_HEAD {.ob_base = {.ob_refcnt = (Py_ssize_t)7 << 28}}

/* PYTHON_API_VERSION, unchanged since 3.2. */
#define API_VERSION 1013

PyObject *PyModule_Create2(PyModuleDef *def, int api_version);

#endif
