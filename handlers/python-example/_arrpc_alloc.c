/*
 * _arrpc_alloc: a small-object allocator for CPython inside a component.
 *
 * componentize-py's CPython is built without pymalloc, so every object (an
 * int, a float, a short str) is a malloc and a free in wasi-libc's
 * dlmalloc, which is most of what decoding a message costs. Importing this
 * extension (arrpc_handler.py does) puts a size-class allocator in front of
 * the object and PyMem domains, as pymalloc would be: requests up to 512
 * bytes come from 64 KiB pools, one 16-byte size class per pool, and go
 * back to a free list for their class. Larger requests, and every pointer
 * the previous allocator handed out before the import, go to it: a byte per
 * 64 KiB page of the 4 GiB address space says which pool class, if any, a
 * pointer belongs to. Pools are kept for reuse, not returned; a component
 * runs one thread, under the GIL, so nothing is locked.
 *
 * It is built without CPython's headers (none exist for this target):
 * the declarations it needs are written out in _arrpc_python.h and below,
 * from CPython's Include/cpython/pymem.h; all are part of CPython's stable
 * ABI or unchanged since 3.5. build-ext.sh compiles it with Zig's clang
 * as a position-independent wasm32 library that componentize-py links
 * into the component.
 */

#include "_arrpc_python.h"

typedef struct {
    void *ctx;
    void *(*malloc)(void *ctx, size_t size);
    void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
    void *(*realloc)(void *ctx, void *ptr, size_t new_size);
    void (*free)(void *ctx, void *ptr);
} PyMemAllocatorEx;

enum { PYMEM_DOMAIN_RAW, PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ };

void PyMem_GetAllocator(int domain, PyMemAllocatorEx *allocator);
void PyMem_SetAllocator(int domain, PyMemAllocatorEx *allocator);
void *aligned_alloc(size_t alignment, size_t size);
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);

#define POOL_SHIFT 16
#define POOL_SIZE ((size_t)1 << POOL_SHIFT)
/* Block sizes are multiples of 16, which keeps every block aligned for
 * any type, as malloc's are. */
#define GRAIN 16
#define CLASSES 32
#define LARGEST (GRAIN * CLASSES)

/* For each 64 KiB page of memory: 0, or 1 + the size class of the pool
 * that starts there. */
static unsigned char pool_class[(size_t)1 << (32 - POOL_SHIFT)];

/* One size class: freed blocks, then the untouched rest of its newest
 * pool. */
struct size_class {
    void *free;
    char *next;
    char *end;
};
static struct size_class classes[CLASSES];

/* What each domain used before: it serves large requests and frees what
 * it handed out. */
static PyMemAllocatorEx mem_before, obj_before;

static size_t block_size(unsigned class) { return (size_t)(class + 1) * GRAIN; }

/* A block from a new pool for `class`, or NULL when memory is exhausted
 * (Python then raises MemoryError). */
static void *new_pool(unsigned class) {
    char *pool = aligned_alloc(POOL_SIZE, POOL_SIZE);
    if (!pool) {
        return 0;
    }
    pool_class[(uintptr_t)pool >> POOL_SHIFT] = (unsigned char)(class + 1);
    size_t size = block_size(class);
    classes[class].next = pool + size;
    classes[class].end = pool + POOL_SIZE - size + 1;
    return pool;
}

static void *small_alloc(size_t n) {
    unsigned class = n ? (unsigned)((n - 1) / GRAIN) : 0;
    struct size_class *c = &classes[class];
    void *block = c->free;
    if (block) {
        c->free = *(void **)block;
        return block;
    }
    if (c->next < c->end) {
        block = c->next;
        c->next += block_size(class);
        return block;
    }
    return new_pool(class);
}

/* `owner` is the block's entry in pool_class: 1 + its class. */
static void small_free(unsigned owner, void *block) {
    struct size_class *c = &classes[owner - 1];
    *(void **)block = c->free;
    c->free = block;
}

/* The four functions of one domain, falling back on `before`. */
#define DOMAIN(name, before)                                                   \
    static void *name##_malloc(void *ctx, size_t n) {                          \
        (void)ctx;                                                             \
        return n <= LARGEST ? small_alloc(n) : before.malloc(before.ctx, n);   \
    }                                                                          \
    static void *name##_calloc(void *ctx, size_t count, size_t each) {         \
        (void)ctx;                                                             \
        size_t n = count * each;                                               \
        if (each && n / each != count) {                                       \
            return 0;                                                          \
        }                                                                      \
        if (n > LARGEST) {                                                     \
            return before.calloc(before.ctx, count, each);                     \
        }                                                                      \
        void *block = small_alloc(n);                                          \
        return block ? memset(block, 0, n) : 0;                                \
    }                                                                          \
    static void name##_free(void *ctx, void *p) {                              \
        (void)ctx;                                                             \
        unsigned owner = pool_class[(uintptr_t)p >> POOL_SHIFT];               \
        if (owner) {                                                           \
            small_free(owner, p);                                              \
        } else {                                                               \
            before.free(before.ctx, p);                                        \
        }                                                                      \
    }                                                                          \
    static void *name##_realloc(void *ctx, void *p, size_t n) {                \
        unsigned owner = pool_class[(uintptr_t)p >> POOL_SHIFT];               \
        if (!owner) {                                                          \
            return p ? before.realloc(before.ctx, p, n) : name##_malloc(ctx, n); \
        }                                                                      \
        size_t have = block_size(owner - 1);                                   \
        if (n <= have) {                                                       \
            return p;                                                          \
        }                                                                      \
        void *moved = name##_malloc(ctx, n);                                   \
        if (moved) {                                                           \
            memcpy(moved, p, have);                                            \
            small_free(owner, p);                                              \
        }                                                                      \
        return moved;                                                          \
    }

DOMAIN(mem, mem_before)
DOMAIN(obj, obj_before)

static PyModuleDef module = {
    .m_base = MODULE_DEF_HEAD,
    .m_name = "_arrpc_alloc",
    .m_doc = "Pools small objects, as pymalloc does; imported for its effect.",
    .m_size = -1,
};

__attribute__((visibility("default"))) PyObject *PyInit__arrpc_alloc(void) {
    /* Installed once, even if the module is imported again. */
    if (!obj_before.malloc) {
        PyMemAllocatorEx mem = {0, mem_malloc, mem_calloc, mem_realloc, mem_free};
        PyMemAllocatorEx obj = {0, obj_malloc, obj_calloc, obj_realloc, obj_free};
        PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &mem_before);
        PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &obj_before);
        PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &mem);
        PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &obj);
    }
    return PyModule_Create2(&module, API_VERSION);
}
