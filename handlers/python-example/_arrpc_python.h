/*
 * What the Python SDK's C extensions (_arrpc_alloc.c, _arrpc_unpack.c,
 * _arrpc_pack.c) need of CPython's C API, written out by hand: no CPython
 * headers exist for componentize-py's wasm32 target. The types and constants are from
 * CPython's Include/ (object.h, moduleobject.h, methodobject.h,
 * modsupport.h, cpython/listobject.h); all are part of the stable ABI or
 * unchanged since 3.5, and the one layout outside it, a list's, is
 * checked at import.
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

/* A module `name` of one function taking one object (METH_O), as
 * `methods` and `module` for PyInit_<name> to create. */
#define MODULE_OF_ONE_FUNCTION(name, function, function_doc, module_doc)       \
    static PyMethodDef methods[] = {                                           \
        {#function, function, METH_O, function_doc},                           \
        {0, 0, 0, 0},                                                          \
    };                                                                         \
    static PyModuleDef module = {                                              \
        .m_base = MODULE_DEF_HEAD,                                             \
        .m_name = name,                                                        \
        .m_doc = module_doc,                                                   \
        .m_size = -1,                                                          \
        .m_methods = methods,                                                  \
    }

PyObject *PyModule_Create2(PyModuleDef *def, int api_version);

/* Include/object.h, Py_GetConstantBorrowed's arguments (3.13 on). */
enum { CONSTANT_NONE, CONSTANT_FALSE, CONSTANT_TRUE, CONSTANT_ELLIPSIS, CONSTANT_NOT_IMPLEMENTED };

PyObject *Py_GetConstantBorrowed(unsigned int constant);
void Py_IncRef(PyObject *object);
void Py_DecRef(PyObject *object);
PyObject *PyList_New(Py_ssize_t size);
int PyList_SetItem(PyObject *list, Py_ssize_t index, PyObject *item);
PyObject *PyDict_New(void);

/* The singletons the extensions compare with and return: immortal, so
 * borrowed. */
static PyObject *none, *py_false, *py_true, *not_implemented;

static inline void get_constants(void) {
    none = Py_GetConstantBorrowed(CONSTANT_NONE);
    py_false = Py_GetConstantBorrowed(CONSTANT_FALSE);
    py_true = Py_GetConstantBorrowed(CONSTANT_TRUE);
    not_implemented = Py_GetConstantBorrowed(CONSTANT_NOT_IMPLEMENTED);
}

/* Include/cpython/listobject.h: PyObject_VAR_HEAD, then the items. */
typedef struct {
    PyObject ob_base;
    Py_ssize_t ob_size;
    PyObject **ob_item;
    Py_ssize_t allocated;
} PyListObject;

/* Whether a list's items are where PyListObject says, as PyList_SetItem
 * puts them: checked once, at import, before any extension reads or
 * writes them directly (as PyList_GET_ITEM and PyList_SET_ITEM do). */
static inline int list_layout_checked(void) {
    PyObject *probe = PyList_New(1);
    if (!probe) {
        return 0;
    }
    PyObject *item = Py_GetConstantBorrowed(CONSTANT_NONE);
    Py_IncRef(item);
    PyList_SetItem(probe, 0, item);
    PyListObject *list = (PyListObject *)probe;
    int known = list->ob_size == 1 && list->ob_item[0] == item;
    Py_DecRef(probe);
    return known;
}

#endif
