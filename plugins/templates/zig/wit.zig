//! The probegate WIT contract as Zig sees it through `wit-bindgen c`: the C types of the
//! generated header, field for field, the host's publish import, and a tiny config reader.
//! Both worlds (analytics, filter) share these; each plugin file adds its world's own
//! `<world>_*_free` functions and exports.

pub const String = extern struct { ptr: ?[*]u8, len: usize };
pub const OptS8 = extern struct { is_some: bool, val: i8 };
pub const OptU16 = extern struct { is_some: bool, val: u16 };
pub const OptU64 = extern struct { is_some: bool, val: u64 };
pub const OptString = extern struct { is_some: bool, val: String };
pub const ListString = extern struct { ptr: ?[*]String, len: usize };
/// probegate_plugin_types_sighting_t, field for field.
pub const Sighting = extern struct {
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
pub const ListSighting = extern struct { ptr: ?[*]Sighting, len: usize };
const PublishError = extern struct {
    tag: u8,
    val: extern union { not_json: String, too_large: u32, rate_limited: u32 },
};

extern fn probegate_plugin_host_publish(stream: *String, payload: *String, err: *PublishError) bool;
extern fn probegate_plugin_host_publish_error_free(err: *PublishError) void;

/// Publishes `text` (JSON) on `name`. The host counts and logs a refusal; only the not-json
/// text it hands back is ours to free.
pub fn publish(name: []const u8, text: []const u8) void {
    var stream = String{ .ptr = @constCast(name.ptr), .len = name.len };
    var payload = String{ .ptr = @constCast(text.ptr), .len = text.len };
    var err: PublishError = undefined;
    if (!probegate_plugin_host_publish(&stream, &payload, &err))
        probegate_plugin_host_publish_error_free(&err);
}

/// The bytes of a string the bindings handed over (empty for a null pointer).
pub fn bytes(s: *const String) []const u8 {
    const p = s.ptr orelse return &[_]u8{};
    return p[0..s.len];
}

/// The whole number after `key` (quoted, as in `"\"window_secs\""`) in a JSON config, read
/// with a deliberately tiny parser: `fallback` without the key, null if no number follows it.
pub fn configInt(config: []const u8, key: []const u8, fallback: i64) ?i64 {
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

test "configInt reads a number, a negative one, a missing key and garbage" {
    const std = @import("std");
    try std.testing.expectEqual(@as(?i64, 300), configInt("{\"window_secs\": 300}", "\"window_secs\"", 900));
    try std.testing.expectEqual(@as(?i64, -70), configInt("{\"min_dbm\":-70}", "\"min_dbm\"", -75));
    try std.testing.expectEqual(@as(?i64, 900), configInt("{}", "\"window_secs\"", 900));
    try std.testing.expectEqual(@as(?i64, null), configInt("{\"window_secs\": \"x\"}", "\"window_secs\"", 900));
}
