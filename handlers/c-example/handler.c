/*
 * An arrpc-host handler in C: echo and sum, chosen by the served name.
 *
 * wit-bindgen generates the bindings for the `handler` world of
 * wit/handler.wit into gen/; msgpuck (a C MessagePack library) decodes and
 * encodes. A name ending in "echo" returns the payload unchanged; one ending
 * in "sum" adds up numbers with the same input, output and error texts as
 * the Rust `sum` handler.
 *
 * Ownership follows wit-bindgen's C rules: the arguments belong to this
 * function and must be freed or handed on; `ret` and `err` must point to
 * malloc'd memory, which the bindings free after the host copied it.
 */

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpuck.h>

#include "handler.h"

#define EXPECTED "an array of numbers or {\"numbers\": [...]}"

/* Sets `err` to a formatted text and returns false, for `return fail(...)`. */
static bool fail(handler_string_t *err, const char *format, ...) {
    char text[256];
    va_list args;
    va_start(args, format);
    vsnprintf(text, sizeof text, format, args);
    va_end(args);
    handler_string_dup(err, text);
    return false;
}

static bool ends_with(const handler_string_t *s, const char *suffix) {
    size_t n = strlen(suffix);
    return s->len >= n && memcmp(s->ptr + s->len - n, suffix, n) == 0;
}

/* Names a value's MessagePack type for error messages, with its article. */
static const char *kind(const char *value) {
    switch (mp_typeof(*value)) {
    case MP_NIL: return "nil";
    case MP_BOOL: return "a boolean";
    case MP_UINT: case MP_INT: return "an integer";
    case MP_FLOAT: case MP_DOUBLE: return "a float";
    case MP_STR: return "a string";
    case MP_BIN: return "binary data";
    case MP_ARRAY: return "an array";
    case MP_MAP: return "a map";
    default: return "an extension value";
    }
}

/* Points `items` at the array in either accepted shape and sets `count`. */
static bool find_numbers(const char **items, uint32_t *count, handler_string_t *err) {
    const char *p = *items;
    if (mp_typeof(*p) == MP_ARRAY) {
        *count = mp_decode_array(items);
        return true;
    }
    if (mp_typeof(*p) != MP_MAP)
        return fail(err, "sum: expected " EXPECTED ", got %s", kind(p));
    uint32_t entries = mp_decode_map(&p);
    const char *found = NULL;
    for (uint32_t i = 0; i < entries; i++) {
        uint32_t len = 0;
        const char *key = mp_typeof(*p) == MP_STR ? mp_decode_str(&p, &len) : NULL;
        if (key == NULL || len != 7 || memcmp(key, "numbers", 7) != 0) {
            if (key == NULL)
                return fail(err, "sum: expected " EXPECTED ", got a map with a key that is %s", kind(p));
            return fail(err, "sum: expected " EXPECTED ", got a map with the key \"%.*s\"", (int)len, key);
        }
        found = p;
        mp_next(&p);
    }
    if (found == NULL)
        return fail(err, "sum: expected " EXPECTED ", got a map without \"numbers\"");
    if (mp_typeof(*found) != MP_ARRAY)
        return fail(err, "sum: expected " EXPECTED ", got \"numbers\" holding %s", kind(found));
    *count = mp_decode_array(&found);
    *items = found;
    return true;
}

static bool sum(const handler_list_u8_t *payload, handler_list_u8_t *ret, handler_string_t *err) {
    const char *p = (const char *)payload->ptr;
    const char *check = p;
    if (mp_check(&check, p + payload->len) != 0)
        return fail(err, "sum: invalid MessagePack");
    uint32_t count = 0;
    if (!find_numbers(&p, &count, err))
        return false;
    /* 128 bits hold any sum of the 64-bit integers one message can carry. */
    __int128 exact = 0;
    double total = 0;
    bool any_float = false;
    for (uint32_t i = 0; i < count; i++) {
        switch (mp_typeof(*p)) {
        case MP_UINT: {
            uint64_t n = mp_decode_uint(&p);
            exact += n;
            total += (double)n;
            break;
        }
        case MP_INT: {
            int64_t n = mp_decode_int(&p);
            exact += n;
            total += (double)n;
            break;
        }
        case MP_FLOAT:
            any_float = true;
            total += mp_decode_float(&p);
            break;
        case MP_DOUBLE:
            any_float = true;
            total += mp_decode_double(&p);
            break;
        default:
            return fail(err, "sum: expected " EXPECTED ", got %s at index %u", kind(p), i);
        }
    }
    char *out = malloc(64);
    char *end = mp_encode_map(out, 2);
    end = mp_encode_str(end, "sum", 3);
    if (any_float) {
        end = mp_encode_double(end, total);
    } else if (exact >= 0 && exact <= (__int128)UINT64_MAX) {
        end = mp_encode_uint(end, (uint64_t)exact);
    } else if (exact < 0 && exact >= (__int128)INT64_MIN) {
        end = mp_encode_int(end, (int64_t)exact);
    } else {
        free(out);
        return fail(err, "sum: integer overflow");
    }
    end = mp_encode_str(end, "count", 5);
    end = mp_encode_uint(end, count);
    ret->ptr = (uint8_t *)out;
    ret->len = (size_t)(end - out);
    return true;
}

bool exports_handler_handle(handler_context_t *ctx, handler_list_u8_t *payload,
                            handler_list_u8_t *ret, handler_string_t *err) {
    bool ok;
    if (ends_with(&ctx->handler, "echo")) {
        /* Hand the payload's memory over as the reply. */
        *ret = *payload;
        payload->ptr = NULL;
        payload->len = 0;
        ok = true;
    } else if (ends_with(&ctx->handler, "sum")) {
        ok = sum(payload, ret, err);
    } else {
        /* stderr goes to the host's log, tagged with handler and request id. */
        fprintf(stderr, "no operation for the name %.*s\n", (int)ctx->handler.len, (const char *)ctx->handler.ptr);
        ok = fail(err, "%.*s: serve this component under a name ending in echo or sum",
                  (int)ctx->handler.len, (const char *)ctx->handler.ptr);
    }
    handler_list_u8_free(payload);
    handler_context_free(ctx);
    return ok;
}
