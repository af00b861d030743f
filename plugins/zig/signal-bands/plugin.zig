//! signal-bands: the glue to the WIT contract. `wit-bindgen c` writes analytics.h/.c at every
//! build; this file declares the few C types and functions it uses from them and exports the
//! `exports_analytics_*` functions analytics.c calls. Each export owns its arguments and frees
//! them with the bindings' free functions. Config: {"interval_secs": N}, 60 by default.
const bands = @import("bands.zig");

const String = extern struct { ptr: ?[*]u8, len: usize };
const OptS8 = extern struct { is_some: bool, val: i8 };
const OptU16 = extern struct { is_some: bool, val: u16 };
const OptU64 = extern struct { is_some: bool, val: u64 };
const OptString = extern struct { is_some: bool, val: String };
const ListString = extern struct { ptr: ?[*]String, len: usize };
/// probegate_plugin_types_sighting_t in analytics.h, field for field.
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
const PublishError = extern struct {
    tag: u8,
    val: extern union { not_json: String, too_large: u32, rate_limited: u32 },
};

extern fn probegate_plugin_host_publish(stream: *String, payload: *String, err: *PublishError) bool;
extern fn probegate_plugin_host_publish_error_free(err: *PublishError) void;
extern fn analytics_string_free(s: *String) void;
extern fn analytics_string_dup(ret: *String, s: [*:0]const u8) void;
extern fn analytics_list_sighting_free(list: *ListSighting) void;

var intervals = bands.Intervals{ .length_ms = 60_000 };

fn publishCounts(c: bands.Counts) void {
    var buf: [200]u8 = undefined;
    const text = bands.json(c, &buf) orelse return;
    const name = "bands";
    var stream = String{ .ptr = @constCast(name.ptr), .len = name.len };
    var payload = String{ .ptr = @constCast(text.ptr), .len = text.len };
    var err: PublishError = undefined;
    // The host counts and logs a refusal; only the not-json text is ours to free.
    if (!probegate_plugin_host_publish(&stream, &payload, &err))
        probegate_plugin_host_publish_error_free(&err);
}

/// `{"interval_secs": N}`, read with a deliberately tiny parser; 60 without the key.
fn intervalSecs(config: []const u8) u64 {
    const key = "\"interval_secs\"";
    var i: usize = 0;
    while (i + key.len <= config.len) : (i += 1) {
        if (!eql(config[i .. i + key.len], key)) continue;
        var j = i + key.len;
        while (j < config.len and (config[j] == ' ' or config[j] == ':')) j += 1;
        var v: u64 = 0;
        while (j < config.len and config[j] >= '0' and config[j] <= '9' and v < 86_400) : (j += 1)
            v = v * 10 + (config[j] - '0');
        return v;
    }
    return 60;
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

export fn exports_analytics_init(config: *String, err: *String) bool {
    const secs = intervalSecs(bytes(config));
    analytics_string_free(config);
    if (secs == 0 or secs > 86_400) {
        // The host frees the error text after the call: the bindings malloc it.
        analytics_string_dup(err, "interval_secs must be a whole number from 1 to 86400");
        return false;
    }
    intervals = bands.Intervals{ .length_ms = secs * 1000 };
    return true;
}

export fn exports_analytics_on_sightings(batch: *ListSighting) void {
    if (batch.ptr) |p| {
        for (p[0..batch.len]) |s| {
            const dbm: ?i8 = if (s.signal_dbm.is_some) s.signal_dbm.val else null;
            if (intervals.add(s.time_ms, dbm)) |c| publishCounts(c);
        }
    }
    analytics_list_sighting_free(batch);
}

export fn exports_analytics_on_tick(now_ms: u64) void {
    if (intervals.advance(now_ms)) |c| publishCounts(c);
}

export fn exports_analytics_on_message(topic: *String, payload: *String) void {
    analytics_string_free(topic);
    analytics_string_free(payload);
}

export fn exports_analytics_on_stop(now_ms: u64) void {
    if (intervals.advance(now_ms)) |c| publishCounts(c);
    if (intervals.stop()) |c| publishCounts(c);
}
