//! signal-bands: the glue to the WIT contract. `wit-bindgen c` writes analytics.h/.c at every
//! build; this file declares the analytics world's own functions it uses from them and exports
//! the `exports_analytics_*` functions analytics.c calls. The types both worlds share come from
//! the Zig template's wit.zig (plugins/templates/zig), which build.sh puts beside this file.
//! Each export owns its arguments and frees them with the bindings' free functions.
//! Config: {"interval_secs": N}, 60 by default.
const wit = @import("wit.zig");
const bands = @import("bands.zig");
const String = wit.String;
const ListSighting = wit.ListSighting;

extern fn analytics_string_free(s: *String) void;
extern fn analytics_string_dup(ret: *String, s: [*:0]const u8) void;
extern fn analytics_list_sighting_free(list: *ListSighting) void;

var intervals = bands.Intervals{ .length_ms = 60_000 };

fn publishCounts(c: bands.Counts) void {
    var buf: [200]u8 = undefined;
    const text = bands.json(c, &buf) orelse return;
    wit.publish("bands", text);
}

export fn exports_analytics_init(config: *String, err: *String) bool {
    const secs = wit.configInt(wit.bytes(config), "\"interval_secs\"", 60) orelse 0;
    analytics_string_free(config);
    if (secs < 1 or secs > 86_400) {
        // The host frees the error text after the call: the bindings malloc it.
        analytics_string_dup(err, "interval_secs must be a whole number from 1 to 86400");
        return false;
    }
    intervals = bands.Intervals{ .length_ms = @as(u64, @intCast(secs)) * 1000 };
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
