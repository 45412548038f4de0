//! An arrpc-host handler in Zig: echo, sum, caller, relay, fetch and count,
//! chosen by the served name.
//!
//! The bindings for the `handler` world of wit/handler.wit plus wasi:http's
//! outgoing-handler are the C ones committed in handlers/c-bindings/http:
//! Zig compiles their handler.c, links their component type and imports
//! handler.h. A name ending in "echo" returns the payload unchanged; one
//! ending in "sum" adds up numbers with the same input, output and error
//! texts as the Rust `sum` handler, reading and writing MessagePack with the
//! few lines below; one ending in "caller" replies with who called, as the
//! host verified it, asked of the host through the imported `client`
//! interface; one ending in "relay" calls another arrpc service through the
//! imported `upstream` interface; one ending in "fetch" makes an HTTP GET
//! through the imported `wasi:http/outgoing-handler`; one ending in "count"
//! increments a counter in a key-value store the handler's `stores` lists,
//! through the imported `wasi:keyvalue` interfaces.
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
        w.strHeader(s.len);
        @memcpy(w.buf[w.len..][0..s.len], s);
        w.len += s.len;
    }

    /// The header of a string of `n` bytes, which the caller writes next.
    fn strHeader(w: *Writer, n: usize) void {
        if (n < 32) {
            w.put(u8, null, 0xa0 | @as(u8, @intCast(n)));
        } else if (n <= std.math.maxInt(u8)) {
            w.put(u8, 0xd9, @intCast(n));
        } else if (n <= std.math.maxInt(u16)) {
            w.put(u16, 0xda, @intCast(n));
        } else {
            w.put(u32, 0xdb, @intCast(n));
        }
    }

    fn bin(w: *Writer, b: []const u8) void {
        if (b.len <= std.math.maxInt(u8)) {
            w.put(u8, 0xc4, @intCast(b.len));
        } else if (b.len <= std.math.maxInt(u16)) {
            w.put(u16, 0xc5, @intCast(b.len));
        } else {
            w.put(u32, 0xc6, @intCast(b.len));
        }
        @memcpy(w.buf[w.len..][0..b.len], b);
        w.len += b.len;
    }

    fn map(w: *Writer, n: usize) void {
        if (n < 16) {
            w.put(u8, null, 0x80 | @as(u8, @intCast(n)));
        } else if (n <= std.math.maxInt(u16)) {
            w.put(u16, 0xde, @intCast(n));
        } else {
            w.put(u32, 0xdf, @intCast(n));
        }
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
const fetch_expected = "fetch: expected {{\"url\": \"http://...\", \"headers\"?: {{name: value}}}}";

/// wasi:http's error-code cases by tag, named as the Python and JavaScript
/// examples name them.
const error_codes = [_][]const u8{
    "DnsTimeout",                   "DnsError",                   "DestinationNotFound",
    "DestinationUnavailable",       "DestinationIpProhibited",    "DestinationIpUnroutable",
    "ConnectionRefused",            "ConnectionTerminated",       "ConnectionTimeout",
    "ConnectionReadTimeout",        "ConnectionWriteTimeout",     "ConnectionLimitReached",
    "TlsProtocolError",             "TlsCertificateError",        "TlsAlertReceived",
    "HttpRequestDenied",            "HttpRequestLengthRequired",  "HttpRequestBodySize",
    "HttpRequestMethodInvalid",     "HttpRequestUriInvalid",      "HttpRequestUriTooLong",
    "HttpRequestHeaderSectionSize", "HttpRequestHeaderSize",      "HttpRequestTrailerSectionSize",
    "HttpRequestTrailerSize",       "HttpResponseIncomplete",     "HttpResponseHeaderSectionSize",
    "HttpResponseHeaderSize",       "HttpResponseBodySize",       "HttpResponseTrailerSectionSize",
    "HttpResponseTrailerSize",      "HttpResponseTransferCoding", "HttpResponseContentCoding",
    "HttpResponseTimeout",          "HttpUpgradeFailed",          "HttpProtocolError",
    "LoopDetected",                 "ConfigurationError",         "InternalError",
};

comptime {
    std.debug.assert(error_codes.len == c.WASI_HTTP_TYPES_ERROR_CODE_INTERNAL_ERROR + 1);
}

/// Replies "fetch: <case>" for a wasi:http error code, with the text of an
/// internal-error, the catch-all, when it has one; frees the code.
fn httpFailure(code: *c.wasi_http_types_error_code_t, err: *c.handler_string_t) bool {
    defer c.wasi_http_types_error_code_free(code);
    if (code.tag == c.WASI_HTTP_TYPES_ERROR_CODE_INTERNAL_ERROR and code.val.internal_error.is_some) {
        const text = code.val.internal_error.val;
        return fail(err, "fetch: InternalError: {s}", .{bytes(text.ptr, text.len)});
    }
    return fail(err, "fetch: {s}", .{error_codes[code.tag]});
}

/// Blocks on `pollable` until it is ready, then drops it.
fn waitFor(pollable: c.wasi_io_poll_own_pollable_t) void {
    c.wasi_io_poll_method_pollable_block(c.wasi_io_poll_borrow_pollable(pollable));
    c.wasi_io_poll_pollable_drop_own(pollable);
}

/// Reads `stream` to its end into `body`, malloc'd, waiting on the stream's
/// pollable whenever no bytes are ready. A failed read replies "fetch:
/// <case>" when the host gives a wasi:http error code, else "fetch: <its
/// text>" (wasmtime-wasi-http gives most body failures as text only).
fn readBody(stream: c.wasi_io_streams_borrow_input_stream_t, body: *c.handler_list_u8_t, err: *c.handler_string_t) bool {
    while (true) {
        var chunk: c.handler_list_u8_t = undefined;
        var failure: c.wasi_io_streams_stream_error_t = undefined;
        if (!c.wasi_io_streams_method_input_stream_read(stream, 64 * 1024, &chunk, &failure)) {
            if (failure.tag == c.WASI_IO_STREAMS_STREAM_ERROR_CLOSED) return true;
            const io_error = failure.val.last_operation_failed;
            defer c.wasi_io_error_error_drop_own(io_error);
            const why = c.wasi_io_error_borrow_error(io_error);
            var code: c.wasi_http_types_error_code_t = undefined;
            if (c.wasi_http_types_http_error_code(why, &code)) return httpFailure(&code, err);
            var text: c.handler_string_t = undefined;
            c.wasi_io_error_method_error_to_debug_string(why, &text);
            defer c.handler_string_free(&text);
            return fail(err, "fetch: {s}", .{bytes(text.ptr, text.len)});
        }
        defer c.handler_list_u8_free(&chunk);
        if (chunk.len == 0) {
            waitFor(c.wasi_io_streams_method_input_stream_subscribe(stream));
            continue;
        }
        const grown: [*]u8 = @ptrCast(std.c.realloc(body.ptr, body.len + chunk.len) orelse
            return fail(err, "fetch: out of memory", .{}));
        @memcpy(grown[body.len..][0..chunk.len], chunk.ptr[0..chunk.len]);
        body.ptr = grown;
        body.len += chunk.len;
    }
}

const Header = c.wasi_http_types_tuple2_field_name_field_value_t;

/// Whether header `i` repeats the name of an earlier one.
fn seenBefore(headers: []const Header, i: usize) bool {
    const name = bytes(headers[i].f0.ptr, headers[i].f0.len);
    for (headers[0..i]) |earlier| {
        if (std.mem.eql(u8, bytes(earlier.f0.ptr, earlier.f0.len), name)) return true;
    }
    return false;
}

/// Writes the values of the headers named as header `i`, from `i` on,
/// joined with ", ", to `out` (when not null), as UTF-8 text with invalid
/// sequences replaced by U+FFFD: header values are bytes in wasi:http, text
/// in the reply. Returns their length.
fn joinedValues(out: ?[*]u8, headers: []const Header, i: usize) usize {
    const name = bytes(headers[i].f0.ptr, headers[i].f0.len);
    var n: usize = 0;
    for (headers[i..], i..) |header, j| {
        if (!std.mem.eql(u8, bytes(header.f0.ptr, header.f0.len), name)) continue;
        if (j > i) {
            if (out) |o| @memcpy(o[n..][0..2], ", ");
            n += 2;
        }
        const text = std.unicode.fmtUtf8(bytes(header.f1.ptr, header.f1.len));
        const len: usize = @intCast(std.fmt.count("{}", .{text}));
        if (out) |o| _ = std.fmt.bufPrint(o[n..][0..len], "{}", .{text}) catch unreachable;
        n += len;
    }
    return n;
}

/// The reply, {"status": n, "headers": {name: value}, "body": bytes}, in
/// malloc'd memory; repeated header names get their values joined.
fn encodeResponse(status: u16, headers: []const Header, body: []const u8, ret: *c.handler_list_u8_t, err: *c.handler_string_t) bool {
    var names: usize = 0;
    // Map, keys and status; each header's string headers, its ", " and the
    // three bytes of a U+FFFD for each byte of its value.
    var size: usize = 1 + 3 * 8 + 3 + 5 + 5 + body.len;
    for (headers, 0..) |header, i| {
        if (!seenBefore(headers, i)) names += 1;
        size += 10 + header.f0.len + 2 + 3 * header.f1.len;
    }
    const out: [*]u8 = @ptrCast(std.c.malloc(size) orelse return fail(err, "fetch: out of memory", .{}));
    var w = Writer{ .buf = out };
    w.map(3);
    w.str("status");
    w.uint(status);
    w.str("headers");
    w.map(names);
    for (headers, 0..) |header, i| {
        if (seenBefore(headers, i)) continue;
        w.str(bytes(header.f0.ptr, header.f0.len));
        w.strHeader(joinedValues(null, headers, i));
        w.len += joinedValues(w.buf[w.len..], headers, i);
    }
    w.str("body");
    w.bin(body);
    ret.ptr = out;
    ret.len = w.len;
    return true;
}

/// Waits for the response to a request sent, reads its headers and whole
/// body, and replies with them. Everything the host handed over is dropped
/// or freed here, children (the headers, the body's stream) before their
/// parents.
fn receive(future: c.wasi_http_types_own_future_incoming_response_t, ret: *c.handler_list_u8_t, err: *c.handler_string_t) bool {
    const pending = c.wasi_http_types_borrow_future_incoming_response(future);
    var outcome: c.wasi_http_types_result_result_own_incoming_response_error_code_void_t = undefined;
    while (!c.wasi_http_types_method_future_incoming_response_get(pending, &outcome))
        waitFor(c.wasi_http_types_method_future_incoming_response_subscribe(pending));
    c.wasi_http_types_future_incoming_response_drop_own(future);
    // Taken once, so the outer result is never its error.
    if (outcome.val.ok.is_err) return httpFailure(&outcome.val.ok.val.err, err);
    const response = outcome.val.ok.val.ok;
    defer c.wasi_http_types_incoming_response_drop_own(response);
    const received = c.wasi_http_types_borrow_incoming_response(response);

    const status = c.wasi_http_types_method_incoming_response_status(received);
    const fields = c.wasi_http_types_method_incoming_response_headers(received);
    var headers: c.wasi_http_types_list_tuple2_field_name_field_value_t = undefined;
    c.wasi_http_types_method_fields_entries(c.wasi_http_types_borrow_fields(fields), &headers);
    c.wasi_http_types_fields_drop_own(fields);
    defer c.wasi_http_types_list_tuple2_field_name_field_value_free(&headers);

    var incoming: c.wasi_http_types_own_incoming_body_t = undefined;
    var stream: c.wasi_http_types_own_input_stream_t = undefined;
    // Both succeed on a response consumed for the first time.
    _ = c.wasi_http_types_method_incoming_response_consume(received, &incoming);
    _ = c.wasi_http_types_method_incoming_body_stream(c.wasi_http_types_borrow_incoming_body(incoming), &stream);
    var body = c.handler_list_u8_t{ .ptr = null, .len = 0 };
    defer std.c.free(body.ptr);
    const read = readBody(c.wasi_io_streams_borrow_input_stream(stream), &body, err);
    c.wasi_io_streams_input_stream_drop_own(stream);
    c.wasi_http_types_future_trailers_drop_own(c.wasi_http_types_static_incoming_body_finish(incoming));
    const entries: []const Header = if (headers.len == 0) &.{} else headers.ptr[0..headers.len];
    return read and encodeResponse(status, entries, bytes(body.ptr, body.len), ret, err);
}

/// GETs the URL the message holds, {"url": "http://...", "headers"?: {name:
/// value}}, through wasi:http, and replies with {"status": n, "headers":
/// {name: value}, "body": bytes}, the body read to its end. The host allows
/// only what this handler's `allowed_outbound_hosts` lists; a request that
/// gets no response replies "fetch: <case>", the case of wasi:http's
/// error-code (HttpRequestDenied for a URL no entry admits).
fn fetch(payload: []const u8, ret: *c.handler_list_u8_t, err: *c.handler_string_t) bool {
    var r = Reader{ .buf = payload };
    r.skip() catch return fail(err, fetch_expected, .{});
    r.pos = 0;
    // The whole value was checked above, so no read below runs past it.
    return fetchChecked(&r, ret, err) catch fail(err, fetch_expected, .{});
}

fn fetchChecked(r: *Reader, ret: *c.handler_list_u8_t, err: *c.handler_string_t) Reader.Error!bool {
    const entries = try r.map() orelse return fail(err, fetch_expected, .{});
    var url: ?[]const u8 = null;
    // At the headers' map, when the message has one.
    var header_map: ?Reader = null;
    for (0..entries) |_| {
        const field = try r.str() orelse {
            // A key that is no string, and its value.
            try r.skip();
            try r.skip();
            continue;
        };
        if (std.mem.eql(u8, field, "url")) {
            url = try r.str() orelse return fail(err, fetch_expected, .{});
        } else if (std.mem.eql(u8, field, "headers") and try r.peek() != 0xc0) {
            header_map = r.*;
            try r.skip();
        } else {
            try r.skip();
        }
    }
    const target = url orelse return fail(err, fetch_expected, .{});
    var count: u32 = 0;
    if (header_map) |*h| count = try h.map() orelse return fail(err, fetch_expected, .{});
    // Room for one at least: the host checks an empty list's pointer too,
    // and a zero-length allocation's lies outside memory.
    const room = std.heap.c_allocator.alloc(Header, @max(count, 1)) catch return fail(err, "fetch: out of memory", .{});
    defer std.heap.c_allocator.free(room);
    const pairs = room[0..count];
    for (pairs) |*pair| {
        const h = &header_map.?;
        const name = try h.str() orelse return fail(err, fetch_expected, .{});
        const value = try h.str() orelse return fail(err, fetch_expected, .{});
        pair.* = .{ .f0 = borrowed(name), .f1 = .{ .ptr = @constCast(value.ptr), .len = value.len } };
    }
    return get(target, pairs, ret, err);
}

/// Sends a GET for `url` with `headers`, borrowed from the payload, and
/// replies with the response.
fn get(url: []const u8, headers: []Header, ret: *c.handler_list_u8_t, err: *c.handler_string_t) bool {
    // scheme://authority/path?query#fragment, the fragment not sent.
    const separator = std.mem.indexOf(u8, url, "://") orelse return fail(err, "fetch: HttpRequestUriInvalid", .{});
    const rest = url[separator + 3 ..];
    const path_at = std.mem.indexOfAny(u8, rest, "/?#") orelse rest.len;
    const path_end = std.mem.indexOfScalarPos(u8, rest, path_at, '#') orelse rest.len;
    var authority = borrowed(rest[0..path_at]);
    var path = borrowed(if (path_end > path_at) rest[path_at..path_end] else "/");
    const scheme_name = url[0..separator];
    var scheme = c.wasi_http_types_scheme_t{ .tag = c.WASI_HTTP_TYPES_SCHEME_OTHER, .val = .{ .other = borrowed(scheme_name) } };
    if (std.ascii.eqlIgnoreCase(scheme_name, "http")) {
        scheme.tag = c.WASI_HTTP_TYPES_SCHEME_HTTP;
    } else if (std.ascii.eqlIgnoreCase(scheme_name, "https")) {
        scheme.tag = c.WASI_HTTP_TYPES_SCHEME_HTTPS;
    }

    var list = c.wasi_http_types_list_tuple2_field_name_field_value_t{ .ptr = headers.ptr, .len = headers.len };
    var fields: c.wasi_http_types_own_fields_t = undefined;
    var header_error: c.wasi_http_types_header_error_t = undefined;
    if (!c.wasi_http_types_static_fields_from_list(&list, &fields, &header_error)) {
        const why = [_][]const u8{ "InvalidSyntax", "Forbidden", "Immutable" };
        return fail(err, "fetch: headers: {s}", .{why[header_error.tag]});
    }
    const request = c.wasi_http_types_constructor_outgoing_request(fields);
    const outgoing = c.wasi_http_types_borrow_outgoing_request(request);
    if (!c.wasi_http_types_method_outgoing_request_set_scheme(outgoing, &scheme) or
        !c.wasi_http_types_method_outgoing_request_set_authority(outgoing, &authority) or
        !c.wasi_http_types_method_outgoing_request_set_path_with_query(outgoing, &path))
    {
        c.wasi_http_types_outgoing_request_drop_own(request);
        return fail(err, "fetch: HttpRequestUriInvalid", .{});
    }
    // GET, the default method, with no body: the request is complete as it
    // is. The host takes ownership of it.
    var future: c.wasi_http_types_own_future_incoming_response_t = undefined;
    var code: c.wasi_http_types_error_code_t = undefined;
    if (!c.wasi_http_outgoing_handler_handle(request, null, &future, &code)) return httpFailure(&code, err);
    return receive(future, ret, err);
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
    } else if (std.mem.endsWith(u8, name, "fetch")) {
        ok = fetch(bytes(payload.ptr, payload.len), ret, err);
    } else if (std.mem.endsWith(u8, name, "count")) {
        ok = increment(bytes(payload.ptr, payload.len), ret, err);
    } else {
        // stderr goes to the host's log, tagged with handler and request id.
        std.io.getStdErr().writer().print("no operation for the name {s}\n", .{name}) catch {};
        ok = fail(err, "{s}: serve this component under a name ending in echo, sum, caller, relay, fetch or count", .{name});
    }
    c.handler_list_u8_free(payload);
    c.handler_context_free(ctx);
    return ok;
}
