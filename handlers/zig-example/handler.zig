//! An arrpc-host handler in Zig: echo, sum, caller, relay and count, chosen
//! by the served name.
//!
//! The bindings for the `handler` world of wit/handler.wit are the C ones
//! committed in handlers/c-bindings: Zig compiles their handler.c, links
//! their component type and imports handler.h. A name ending in "echo"
//! returns the payload unchanged; one ending in "sum" adds up numbers with
//! the same input, output and error texts as the Rust `sum` handler, reading
//! and writing MessagePack with the few lines below; one ending in "caller"
//! replies with who called, as the host verified it, asked of the host
//! through the imported `client` interface; one ending in "relay" calls
//! another arrpc service through the imported `upstream` interface; one
//! ending in "count" increments a counter in a key-value store the
//! handler's `stores` lists, through the imported `wasi:keyvalue`
//! interfaces.
//!
//! Ownership follows wit-bindgen's C rules: the arguments belong to this
//! function and must be freed or handed on; `ret` and `err` must point to
//! malloc'd memory, which the bindings free after the host copied it.

const std = @import("std");
const c = @cImport(@cInclude("handler.h"));

/// A format string: the braces are doubled for std.fmt.
const expected = "an array of numbers or {{\"numbers\": [...]}}";

/// Sets `err` to a formatted text and returns false, for `return fail(...)`.
fn fail(err: *c.handler_string_t, comptime format: []const u8, args: anytype) bool {
    const len: usize = @intCast(std.fmt.count(format, args));
    const text: [*]u8 = @ptrCast(std.c.malloc(len) orelse @panic("out of memory"));
    _ = std.fmt.bufPrint(text[0..len], format, args) catch unreachable;
    err.ptr = text;
    err.len = len;
    return false;
}

fn bytes(ptr: [*c]u8, len: usize) []const u8 {
    return if (len == 0) &.{} else ptr[0..len];
}

/// A MessagePack reader over one message.
const Reader = struct {
    buf: []const u8,
    pos: usize = 0,

    const Error = error{Truncated};

    fn peek(r: *const Reader) Error!u8 {
        if (r.pos >= r.buf.len) return error.Truncated;
        return r.buf[r.pos];
    }

    fn take(r: *Reader, n: usize) Error![]const u8 {
        if (r.buf.len - r.pos < n) return error.Truncated;
        defer r.pos += n;
        return r.buf[r.pos..][0..n];
    }

    fn int(r: *Reader, comptime T: type) Error!T {
        const raw = try r.take(@sizeOf(T));
        return std.mem.readInt(T, raw[0..@sizeOf(T)], .big);
    }

    /// The length that follows a str, bin or ext marker, or an array or
    /// map header's count, read as a big-endian integer of `size` bytes.
    fn length(r: *Reader, size: u8) Error!u32 {
        return switch (size) {
            1 => try r.int(u8),
            2 => try r.int(u16),
            else => try r.int(u32),
        };
    }

    /// Skips one whole value, checking that it lies inside the message.
    fn skip(r: *Reader) Error!void {
        var left: u64 = 1;
        while (left > 0) : (left -= 1) {
            const m = (try r.take(1))[0];
            switch (m) {
                0x00...0x7f, 0xe0...0xff, 0xc0, 0xc2, 0xc3 => {},
                0x80...0x8f => left += 2 * @as(u64, m & 0x0f),
                0x90...0x9f => left += m & 0x0f,
                0xa0...0xbf => _ = try r.take(m & 0x1f),
                0xc4, 0xd9 => _ = try r.take(try r.length(1)),
                0xc5, 0xda => _ = try r.take(try r.length(2)),
                0xc6, 0xdb => _ = try r.take(try r.length(4)),
                0xc7 => _ = try r.take(@as(usize, try r.length(1)) + 1),
                0xc8 => _ = try r.take(@as(usize, try r.length(2)) + 1),
                0xc9 => _ = try r.take(@as(usize, try r.length(4)) + 1),
                0xca, 0xce, 0xd2 => _ = try r.take(4),
                0xcb, 0xcf, 0xd3 => _ = try r.take(8),
                0xcc, 0xd0 => _ = try r.take(1),
                0xcd, 0xd1 => _ = try r.take(2),
                0xd4 => _ = try r.take(2),
                0xd5 => _ = try r.take(3),
                0xd6 => _ = try r.take(5),
                0xd7 => _ = try r.take(9),
                0xd8 => _ = try r.take(17),
                0xdc => left += try r.length(2),
                0xdd => left += try r.length(4),
                0xde => left += 2 * @as(u64, try r.length(2)),
                0xdf => left += 2 * @as(u64, try r.length(4)),
                0xc1 => return error.Truncated,
            }
        }
    }

    /// An array's element count, or null if the next value is no array.
    fn array(r: *Reader) Error!?u32 {
        const m = try r.peek();
        switch (m) {
            0x90...0x9f => {
                r.pos += 1;
                return m & 0x0f;
            },
            0xdc, 0xdd => {
                r.pos += 1;
                return try r.length(if (m == 0xdc) 2 else 4);
            },
            else => return null,
        }
    }

    /// A map's entry count, or null if the next value is no map.
    fn map(r: *Reader) Error!?u32 {
        const m = try r.peek();
        switch (m) {
            0x80...0x8f => {
                r.pos += 1;
                return m & 0x0f;
            },
            0xde, 0xdf => {
                r.pos += 1;
                return try r.length(if (m == 0xde) 2 else 4);
            },
            else => return null,
        }
    }

    /// An integer that fits in an i64, or null if the next value is none.
    fn signed(r: *Reader) Error!?i64 {
        const m = try r.peek();
        const n: i128 = switch (m) {
            0x00...0x7f => m,
            0xe0...0xff => @as(i8, @bitCast(m)),
            0xcc...0xd3 => blk: {
                r.pos += 1;
                break :blk switch (m) {
                    0xcc => try r.int(u8),
                    0xcd => try r.int(u16),
                    0xce => try r.int(u32),
                    0xcf => try r.int(u64),
                    0xd0 => try r.int(i8),
                    0xd1 => try r.int(i16),
                    0xd2 => try r.int(i32),
                    else => try r.int(i64),
                };
            },
            else => return null,
        };
        if (m <= 0x7f or m >= 0xe0) r.pos += 1;
        return std.math.cast(i64, n);
    }

    /// A string's bytes, or null if the next value is no string.
    fn str(r: *Reader) Error!?[]const u8 {
        const m = try r.peek();
        const len: u32 = switch (m) {
            0xa0...0xbf => blk: {
                r.pos += 1;
                break :blk m & 0x1f;
            },
            0xd9, 0xda, 0xdb => blk: {
                r.pos += 1;
                break :blk try r.length(@as(u8, 1) << @intCast(m - 0xd9));
            },
            else => return null,
        };
        return try r.take(len);
    }
};

/// Names a value's MessagePack type for error messages, with its article.
fn kind(marker: u8) []const u8 {
    return switch (marker) {
        0xc0 => "nil",
        0xc2, 0xc3 => "a boolean",
        0x00...0x7f, 0xe0...0xff, 0xcc...0xd3 => "an integer",
        0xca, 0xcb => "a float",
        0xa0...0xbf, 0xd9...0xdb => "a string",
        0xc4...0xc6 => "binary data",
        0x90...0x9f, 0xdc, 0xdd => "an array",
        0x80...0x8f, 0xde, 0xdf => "a map",
        else => "an extension value",
    };
}

/// Moves `r` to the first number in either accepted shape; returns how many.
fn findNumbers(r: *Reader, err: *c.handler_string_t) Reader.Error!?u32 {
    if (try r.array()) |count| return count;
    const entries = try r.map() orelse {
        _ = fail(err, "sum: expected " ++ expected ++ ", got {s}", .{kind(try r.peek())});
        return null;
    };
    var found: ?usize = null;
    for (0..entries) |_| {
        const marker = try r.peek();
        const key = try r.str() orelse {
            _ = fail(err, "sum: expected " ++ expected ++ ", got a map with a key that is {s}", .{kind(marker)});
            return null;
        };
        if (!std.mem.eql(u8, key, "numbers")) {
            _ = fail(err, "sum: expected " ++ expected ++ ", got a map with the key \"{s}\"", .{key});
            return null;
        }
        found = r.pos;
        try r.skip();
    }
    r.pos = found orelse {
        _ = fail(err, "sum: expected " ++ expected ++ ", got a map without \"numbers\"", .{});
        return null;
    };
    return try r.array() orelse {
        _ = fail(err, "sum: expected " ++ expected ++ ", got \"numbers\" holding {s}", .{kind(try r.peek())});
        return null;
    };
}

/// Appends MessagePack values to a buffer big enough for them.
const Writer = struct {
    buf: [*]u8,
    len: usize = 0,

    fn put(w: *Writer, comptime T: type, marker: ?u8, value: T) void {
        if (marker) |m| {
            w.buf[w.len] = m;
            w.len += 1;
        }
        std.mem.writeInt(T, w.buf[w.len..][0..@sizeOf(T)], value, .big);
        w.len += @sizeOf(T);
    }

    fn str(w: *Writer, s: []const u8) void {
        if (s.len < 32) {
            w.put(u8, null, 0xa0 | @as(u8, @intCast(s.len)));
        } else if (s.len <= std.math.maxInt(u8)) {
            w.put(u8, 0xd9, @intCast(s.len));
        } else if (s.len <= std.math.maxInt(u16)) {
            w.put(u16, 0xda, @intCast(s.len));
        } else {
            w.put(u32, 0xdb, @intCast(s.len));
        }
        @memcpy(w.buf[w.len..][0..s.len], s);
        w.len += s.len;
    }

    fn array(w: *Writer, n: usize) void {
        if (n < 16) {
            w.put(u8, null, 0x90 | @as(u8, @intCast(n)));
        } else if (n <= std.math.maxInt(u16)) {
            w.put(u16, 0xdc, @intCast(n));
        } else {
            w.put(u32, 0xdd, @intCast(n));
        }
    }

    fn nil(w: *Writer) void {
        w.put(u8, null, 0xc0);
    }

    fn uint(w: *Writer, n: u64) void {
        if (n < 0x80) {
            w.put(u8, null, @intCast(n));
        } else if (n <= std.math.maxInt(u8)) {
            w.put(u8, 0xcc, @intCast(n));
        } else if (n <= std.math.maxInt(u16)) {
            w.put(u16, 0xcd, @intCast(n));
        } else if (n <= std.math.maxInt(u32)) {
            w.put(u32, 0xce, @intCast(n));
        } else {
            w.put(u64, 0xcf, n);
        }
    }

    /// A negative integer.
    fn int(w: *Writer, n: i64) void {
        if (n >= -32) {
            w.put(i8, null, @intCast(n));
        } else if (n >= std.math.minInt(i8)) {
            w.put(i8, 0xd0, @intCast(n));
        } else if (n >= std.math.minInt(i16)) {
            w.put(i16, 0xd1, @intCast(n));
        } else if (n >= std.math.minInt(i32)) {
            w.put(i32, 0xd2, @intCast(n));
        } else {
            w.put(i64, 0xd3, n);
        }
    }

    fn double(w: *Writer, x: f64) void {
        w.put(u64, 0xcb, @bitCast(x));
    }
};

fn sum(payload: []const u8, ret: *c.handler_list_u8_t, err: *c.handler_string_t) bool {
    var r = Reader{ .buf = payload };
    r.skip() catch return fail(err, "sum: invalid MessagePack", .{});
    r.pos = 0;
    // The whole value was checked above, so no read below runs past it.
    return sumChecked(&r, ret, err) catch fail(err, "sum: invalid MessagePack", .{});
}

fn sumChecked(r: *Reader, ret: *c.handler_list_u8_t, err: *c.handler_string_t) Reader.Error!bool {
    const count = try findNumbers(r, err) orelse return false;
    // 128 bits hold any sum of the 64-bit integers one message can carry.
    var exact: i128 = 0;
    var total: f64 = 0;
    var any_float = false;
    for (0..count) |i| {
        const m = (try r.take(1))[0];
        const n: i128 = switch (m) {
            0x00...0x7f => m,
            0xe0...0xff => @as(i8, @bitCast(m)),
            0xcc => try r.int(u8),
            0xcd => try r.int(u16),
            0xce => try r.int(u32),
            0xcf => try r.int(u64),
            0xd0 => try r.int(i8),
            0xd1 => try r.int(i16),
            0xd2 => try r.int(i32),
            0xd3 => try r.int(i64),
            0xca, 0xcb => {
                any_float = true;
                total += if (m == 0xca) @as(f32, @bitCast(try r.int(u32))) else @as(f64, @bitCast(try r.int(u64)));
                continue;
            },
            else => return fail(err, "sum: expected " ++ expected ++ ", got {s} at index {d}", .{ kind(m), i }),
        };
        exact += n;
        total += @floatFromInt(n);
    }
    const out: [*]u8 = @ptrCast(std.c.malloc(64) orelse return fail(err, "sum: out of memory", .{}));
    var w = Writer{ .buf = out };
    w.put(u8, null, 0x82);
    w.str("sum");
    if (any_float) {
        w.double(total);
    } else if (exact >= 0 and exact <= std.math.maxInt(u64)) {
        w.uint(@intCast(exact));
    } else if (exact < 0 and exact >= std.math.minInt(i64)) {
        w.int(@intCast(exact));
    } else {
        std.c.free(out);
        return fail(err, "sum: integer overflow", .{});
    }
    w.str("count");
    w.uint(count);
    ret.ptr = out;
    ret.len = w.len;
    return true;
}

/// Replies with who called: {"spiffe_id": <string or nil>, "dns_names":
/// [<string>...]}, or nil when the host verified no client certificate
/// (plain TCP, or TLS without one). The identity the host returns belongs
/// to this function, which frees it.
fn whoCalled(ret: *c.handler_list_u8_t, err: *c.handler_string_t) bool {
    var identity: c.arrpc_handler_client_identity_t = undefined;
    const caller: ?*c.arrpc_handler_client_identity_t = if (c.arrpc_handler_client_caller(&identity)) &identity else null;
    defer if (caller) |who| c.arrpc_handler_client_identity_free(who);
    const spiffe_id: ?[]const u8 = if (caller) |who|
        (if (who.spiffe_id.is_some) bytes(who.spiffe_id.val.ptr, who.spiffe_id.val.len) else null)
    else
        null;
    const names: []const c.handler_string_t = if (caller) |who|
        (if (who.dns_names.len == 0) &.{} else who.dns_names.ptr[0..who.dns_names.len])
    else
        &.{};
    // Headers take at most 5 bytes; the keys 10 each.
    var size: usize = 1;
    if (caller != null) {
        size = 1 + 2 * 10 + 5 + (if (spiffe_id) |id| id.len else 0) + 5;
        for (names) |name| size += 5 + name.len;
    }
    const out: [*]u8 = @ptrCast(std.c.malloc(size) orelse return fail(err, "caller: out of memory", .{}));
    var w = Writer{ .buf = out };
    if (caller != null) {
        w.put(u8, null, 0x82);
        w.str("spiffe_id");
        if (spiffe_id) |id| {
            w.str(id);
        } else {
            w.nil();
        }
        w.str("dns_names");
        w.array(names.len);
        for (names) |name| w.str(bytes(name.ptr, name.len));
    } else {
        w.nil();
    }
    ret.ptr = out;
    ret.len = w.len;
    return true;
}

/// A format string, as `expected`.
const relay_expected = "relay: expected {{\"upstream\": name, \"method\": name, \"params\": value}}";

/// Calls `method` of the upstream the message names, {"upstream": name,
/// "method": name, "params": value}, and replies with its result as the
/// upstream sent it: the host's reply, malloc'd by the bindings, becomes
/// `ret`. The host allows only the upstreams this handler's `upstreams`
/// lists. A failed call replies "relay: <why>: <text>", the case of the WIT
/// `call-error`, which says whether the call may have run.
fn relay(payload: []const u8, ret: *c.handler_list_u8_t, err: *c.handler_string_t) bool {
    var r = Reader{ .buf = payload };
    r.skip() catch return fail(err, relay_expected, .{});
    r.pos = 0;
    // The whole value was checked above, so no read below runs past it.
    return relayChecked(&r, ret, err) catch fail(err, relay_expected, .{});
}

fn relayChecked(r: *Reader, ret: *c.handler_list_u8_t, err: *c.handler_string_t) Reader.Error!bool {
    const entries = try r.map() orelse return fail(err, relay_expected, .{});
    var upstream: ?[]const u8 = null;
    var method: ?[]const u8 = null;
    // The params' bytes within the payload; nil when the message has none.
    var params: []const u8 = &.{0xc0};
    for (0..entries) |_| {
        const key = try r.str() orelse {
            // A key that is no string, and its value.
            try r.skip();
            try r.skip();
            continue;
        };
        if (std.mem.eql(u8, key, "params")) {
            const start = r.pos;
            try r.skip();
            params = r.buf[start..r.pos];
        } else if (std.mem.eql(u8, key, "upstream")) {
            upstream = try r.str() orelse return fail(err, relay_expected, .{});
        } else if (std.mem.eql(u8, key, "method")) {
            method = try r.str() orelse return fail(err, relay_expected, .{});
        } else {
            try r.skip();
        }
    }
    var name = borrowed(upstream orelse return fail(err, relay_expected, .{}));
    var operation = borrowed(method orelse return fail(err, relay_expected, .{}));
    var bytes_in = c.handler_list_u8_t{ .ptr = @constCast(params.ptr), .len = params.len };
    var error_out: c.arrpc_handler_upstream_call_error_t = undefined;
    if (c.arrpc_handler_upstream_call(&name, &operation, &bytes_in, ret, &error_out)) return true;
    defer c.arrpc_handler_upstream_call_error_free(&error_out);
    const why, const detail = switch (error_out.tag) {
        c.ARRPC_HANDLER_UPSTREAM_CALL_ERROR_DENIED => .{ "denied", error_out.val.denied },
        c.ARRPC_HANDLER_UPSTREAM_CALL_ERROR_NOT_RUN => .{ "not-run", error_out.val.not_run },
        c.ARRPC_HANDLER_UPSTREAM_CALL_ERROR_MAY_HAVE_RUN => .{ "may-have-run", error_out.val.may_have_run },
        c.ARRPC_HANDLER_UPSTREAM_CALL_ERROR_REMOTE => .{ "remote", error_out.val.remote },
        else => return fail(err, "relay: timed-out", .{}),
    };
    return fail(err, "relay: {s}: {s}", .{ why, bytes(detail.ptr, detail.len) });
}

/// A format string, as `expected`.
const count_expected = "count: expected {{\"store\": name, \"key\": text, \"by\": integer}}";

/// Adds `by` (default 1) to the counter under `key` in the store the
/// message names, {"store": name, "key": text, "by": integer}, and replies
/// with the new value. The increment is atomic in the store, so handlers on
/// any number of instances or hosts sharing it lose no count. A store
/// failure replies "count: <case>": no-such-store, access-denied (the
/// handler's `stores` does not list it) or "other: <why>".
fn increment(payload: []const u8, ret: *c.handler_list_u8_t, err: *c.handler_string_t) bool {
    var r = Reader{ .buf = payload };
    r.skip() catch return fail(err, count_expected, .{});
    r.pos = 0;
    // The whole value was checked above, so no read below runs past it.
    return incrementChecked(&r, ret, err) catch fail(err, count_expected, .{});
}

fn incrementChecked(r: *Reader, ret: *c.handler_list_u8_t, err: *c.handler_string_t) Reader.Error!bool {
    const entries = try r.map() orelse return fail(err, count_expected, .{});
    var store: ?[]const u8 = null;
    var key: ?[]const u8 = null;
    var by: i64 = 1;
    for (0..entries) |_| {
        const field = try r.str() orelse {
            // A key that is no string, and its value.
            try r.skip();
            try r.skip();
            continue;
        };
        if (std.mem.eql(u8, field, "store")) {
            store = try r.str() orelse return fail(err, count_expected, .{});
        } else if (std.mem.eql(u8, field, "key")) {
            key = try r.str() orelse return fail(err, count_expected, .{});
        } else if (std.mem.eql(u8, field, "by")) {
            by = try r.signed() orelse return fail(err, count_expected, .{});
        } else {
            try r.skip();
        }
    }
    var name = borrowed(store orelse return fail(err, count_expected, .{}));
    var counter = borrowed(key orelse return fail(err, count_expected, .{}));
    var bucket: c.wasi_keyvalue_store_own_bucket_t = undefined;
    var failure: c.wasi_keyvalue_store_error_t = undefined;
    if (!c.wasi_keyvalue_store_open(&name, &bucket, &failure)) return storeFailure(&failure, err);
    defer c.wasi_keyvalue_store_bucket_drop_own(bucket);
    var value: i64 = undefined;
    if (!c.wasi_keyvalue_atomics_increment(c.wasi_keyvalue_store_borrow_bucket(bucket), &counter, by, &value, &failure))
        return storeFailure(&failure, err);
    const out: [*]u8 = @ptrCast(std.c.malloc(9) orelse return fail(err, "count: out of memory", .{}));
    var w = Writer{ .buf = out };
    if (value < 0) w.int(value) else w.uint(@intCast(value));
    ret.ptr = out;
    ret.len = w.len;
    return true;
}

/// Replies "count: <case>" for a store's error, the case as WIT spells it,
/// and frees the error.
fn storeFailure(failure: *c.wasi_keyvalue_store_error_t, err: *c.handler_string_t) bool {
    defer c.wasi_keyvalue_store_error_free(failure);
    return switch (failure.tag) {
        c.WASI_KEYVALUE_STORE_ERROR_NO_SUCH_STORE => fail(err, "count: no-such-store", .{}),
        c.WASI_KEYVALUE_STORE_ERROR_ACCESS_DENIED => fail(err, "count: access-denied", .{}),
        else => fail(err, "count: other: {s}", .{bytes(failure.val.other.ptr, failure.val.other.len)}),
    };
}

/// A string of the payload, borrowed for an import's argument.
fn borrowed(s: []const u8) c.handler_string_t {
    return .{ .ptr = @constCast(s.ptr), .len = s.len };
}

export fn exports_handler_handle(
    ctx: *c.handler_context_t,
    payload: *c.handler_list_u8_t,
    ret: *c.handler_list_u8_t,
    err: *c.handler_string_t,
) bool {
    const name = bytes(ctx.handler.ptr, ctx.handler.len);
    var ok: bool = undefined;
    if (std.mem.endsWith(u8, name, "echo")) {
        // Hand the payload's memory over as the reply.
        ret.* = payload.*;
        payload.ptr = null;
        payload.len = 0;
        ok = true;
    } else if (std.mem.endsWith(u8, name, "sum")) {
        ok = sum(bytes(payload.ptr, payload.len), ret, err);
    } else if (std.mem.endsWith(u8, name, "caller")) {
        ok = whoCalled(ret, err);
    } else if (std.mem.endsWith(u8, name, "relay")) {
        ok = relay(bytes(payload.ptr, payload.len), ret, err);
    } else if (std.mem.endsWith(u8, name, "count")) {
        ok = increment(bytes(payload.ptr, payload.len), ret, err);
    } else {
        // stderr goes to the host's log, tagged with handler and request id.
        std.io.getStdErr().writer().print("no operation for the name {s}\n", .{name}) catch {};
        ok = fail(err, "{s}: serve this component under a name ending in echo, sum, caller, relay or count", .{name});
    }
    c.handler_list_u8_free(payload);
    c.handler_context_free(ctx);
    return ok;
}
