//! {{name}}: the glue to the WIT contract. `wit-bindgen c` writes filter.h/.c at every build;
//! this file declares the filter world's own types and functions it uses from them and exports
//! the `exports_filter_*` functions filter.c calls (the types both worlds share are in
//! wit.zig). Each export owns its arguments and frees them with the bindings' free functions.
//! Config: {"min_dbm": -75, "window_secs": 900}.
const wit = @import("wit.zig");
const gate = @import("gate.zig");
const String = wit.String;
const ListString = wit.ListString;
const ListSighting = wit.ListSighting;

/// probegate_plugin_types_verdict_t: tag 0 pass, 1 drop, 2 tag (with the list).
const Verdict = extern struct { tag: u8, val: extern union { tag: ListString } };
const ListVerdict = extern struct { ptr: ?[*]Verdict, len: usize };
const verdict_pass: u8 = 0;
const verdict_drop: u8 = 1;

extern fn filter_string_free(s: *String) void;
extern fn filter_string_dup(ret: *String, s: [*:0]const u8) void;
extern fn filter_list_sighting_free(list: *ListSighting) void;
// wasi-libc's: the bindings free the verdict list with free() once the host has read it.
extern fn malloc(size: usize) ?*anyopaque;

var g = gate.Gate{ .min_dbm = -75, .length_ms = 900_000 };

fn publishCounts(c: gate.Counts) void {
    var buf: [160]u8 = undefined;
    const text = gate.json(c, &buf) orelse return;
    wit.publish("verdicts", text);
}

export fn exports_filter_init(config: *String, err: *String) bool {
    const secs = wit.configInt(wit.bytes(config), "\"window_secs\"", 900);
    const dbm = wit.configInt(wit.bytes(config), "\"min_dbm\"", -75);
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
