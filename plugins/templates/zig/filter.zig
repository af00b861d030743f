//! {{name}}: the glue to the WIT contract. `wit-bindgen c` writes filter.h/.c at every build;
//! this file declares the few C types and functions it uses from them and exports the
//! `exports_filter_*` functions filter.c calls. Each export owns its arguments and frees them
//! with the bindings' free functions. Config: {"min_dbm": -75, "window_secs": 900}.
const gate = @import("gate.zig");

const String = extern struct { ptr: ?[*]u8, len: usize };
const OptS8 = extern struct { is_some: bool, val: i8 };
const OptU16 = extern struct { is_some: bool, val: u16 };
const OptU64 = extern struct { is_some: bool, val: u64 };
const OptString = extern struct { is_some: bool, val: String };
const ListString = extern struct { ptr: ?[*]String, len: usize };
/// probegate_plugin_types_sighting_t in filter.h, field for field.
const Sighting = extern struct {
    device: u64,
    epoch: u32,
    time_ms: u64,
    randomized: bool,
    signal_dbm: OptS8,
    freq_mhz: OptU16,
    seq: OptU16,
    ie_signature: OptU64,
    consent_token: OptString,
    tags: ListString,
};
const ListSighting = extern struct { ptr: ?[*]Sighting, len: usize };
/// probegate_plugin_types_verdict_t: tag 0 pass, 1 drop, 2 tag (with the list).
const Verdict = extern struct { tag: u8, val: extern union { tag: ListString } };
const ListVerdict = extern struct { ptr: ?[*]Verdict, len: usize };
const verdict_pass: u8 = 0;
const verdict_drop: u8 = 1;
const PublishError = extern struct {
    tag: u8,
    val: extern union { not_json: String, too_large: u32, rate_limited: u32 },
};

extern fn probegate_plugin_host_publish(stream: *String, payload: *String, err: *PublishError) bool;
extern fn probegate_plugin_host_publish_error_free(err: *PublishError) void;
extern fn filter_string_free(s: *String) void;
extern fn filter_string_dup(ret: *String, s: [*:0]const u8) void;
extern fn filter_list_sighting_free(list: *ListSighting) void;
// wasi-libc's: the bindings free the verdict list with free() once the host has read it.
extern fn malloc(size: usize) ?*anyopaque;

var g = gate.Gate{ .min_dbm = -75, .length_ms = 900_000 };

fn publishCounts(c: gate.Counts) void {
    var buf: [160]u8 = undefined;
    const text = gate.json(c, &buf) orelse return;
    const name = "verdicts";
    var stream = String{ .ptr = @constCast(name.ptr), .len = name.len };
    var payload = String{ .ptr = @constCast(text.ptr), .len = text.len };
    var err: PublishError = undefined;
    // The host counts and logs a refusal; only the not-json text is ours to free.
    if (!probegate_plugin_host_publish(&stream, &payload, &err))
        probegate_plugin_host_publish_error_free(&err);
}

/// The whole number after `key` in the config, read with a deliberately tiny parser;
/// `fallback` without the key, null if no number follows it.
fn configInt(config: []const u8, key: []const u8, fallback: i64) ?i64 {
    var i: usize = 0;
    while (i + key.len <= config.len) : (i += 1) {
        if (!eql(config[i .. i + key.len], key)) continue;
        var j = i + key.len;
        while (j < config.len and (config[j] == ' ' or config[j] == ':')) j += 1;
        var sign: i64 = 1;
        if (j < config.len and config[j] == '-') {
            sign = -1;
            j += 1;
        }
        if (j >= config.len or config[j] < '0' or config[j] > '9') return null;
        var v: i64 = 0;
        while (j < config.len and config[j] >= '0' and config[j] <= '9' and v < 1_000_000) : (j += 1)
            v = v * 10 + (config[j] - '0');
        return sign * v;
    }
    return fallback;
}

fn eql(a: []const u8, b: []const u8) bool {
    if (a.len != b.len) return false;
    for (a, b) |x, y| if (x != y) return false;
    return true;
}

fn bytes(s: *const String) []const u8 {
    const p = s.ptr orelse return &[_]u8{};
    return p[0..s.len];
}

export fn exports_filter_init(config: *String, err: *String) bool {
    const secs = configInt(bytes(config), "\"window_secs\"", 900);
    const dbm = configInt(bytes(config), "\"min_dbm\"", -75);
    filter_string_free(config);
    // The host frees the error text after the call: the bindings malloc it.
    const s = secs orelse 0;
    if (s < 1 or s > 86_400) {
        filter_string_dup(err, "window_secs must be a whole number from 1 to 86400");
        return false;
    }
    const d = dbm orelse 1;
    if (d < -128 or d > 0) {
        filter_string_dup(err, "min_dbm must be a whole number from -128 to 0");
        return false;
    }
    g = gate.Gate{ .min_dbm = @intCast(d), .length_ms = @as(u64, @intCast(s)) * 1000 };
    return true;
}

export fn exports_filter_filter(batch: *ListSighting, ret: *ListVerdict) void {
    ret.* = .{ .ptr = null, .len = 0 };
    if (batch.ptr) |p| {
        const raw = malloc(batch.len * @sizeOf(Verdict)) orelse @trap();
        const out: [*]Verdict = @ptrCast(@alignCast(raw));
        for (p[0..batch.len], 0..) |s, i| {
            const kept = g.keeps(if (s.signal_dbm.is_some) s.signal_dbm.val else null);
            if (g.count(s.time_ms, kept)) |c| publishCounts(c);
            out[i] = .{ .tag = if (kept) verdict_pass else verdict_drop, .val = undefined };
        }
        ret.* = .{ .ptr = out, .len = batch.len };
    }
    filter_list_sighting_free(batch);
}

export fn exports_filter_on_tick(now_ms: u64) void {
    if (g.advance(now_ms)) |c| publishCounts(c);
}

export fn exports_filter_on_message(topic: *String, payload: *String) void {
    filter_string_free(topic);
    filter_string_free(payload);
}

export fn exports_filter_on_stop(now_ms: u64) void {
    if (g.advance(now_ms)) |c| publishCounts(c);
    if (g.stop()) |c| publishCounts(c);
}
