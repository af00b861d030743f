//! signal-bands: sightings per interval by how strong they were heard, a rough distance from
//! the router: `near` (-60 dBm or stronger), `mid` (-61 to -75), `far` (weaker than -75) and
//! `unknown` (the radio gave no reading). Plain Zig with no WIT types, so `zig test bands.zig`
//! runs these tests natively.
const std = @import("std");

pub const near_dbm: i8 = -60;
pub const mid_dbm: i8 = -75;

pub const Counts = struct {
    start_ms: u64,
    near: u32 = 0,
    mid: u32 = 0,
    far: u32 = 0,
    unknown: u32 = 0,
    partial: bool = false,

    pub fn sightings(c: Counts) u32 {
        return c.near +| c.mid +| c.far +| c.unknown;
    }
};

pub const Intervals = struct {
    length_ms: u64,
    open: ?Counts = null,

    /// Pipeline time reached `now_ms`: the open interval's counts if that closed it.
    pub fn advance(self: *Intervals, now_ms: u64) ?Counts {
        const c = self.open orelse return null;
        if (now_ms < c.start_ms + self.length_ms) return null;
        self.open = null;
        return c;
    }

    /// One sighting heard at `dbm` (null: no reading); the previous interval's counts if it
    /// had ended before `time_ms`.
    pub fn add(self: *Intervals, time_ms: u64, dbm: ?i8) ?Counts {
        const closed = self.advance(time_ms);
        if (self.open == null) self.open = Counts{ .start_ms = time_ms - time_ms % self.length_ms };
        const c = &self.open.?;
        if (dbm) |d| {
            if (d >= near_dbm) c.near +|= 1 else if (d >= mid_dbm) c.mid +|= 1 else c.far +|= 1;
        } else c.unknown +|= 1;
        return closed;
    }

    /// The capture ended: the open interval, marked partial.
    pub fn stop(self: *Intervals) ?Counts {
        var c = self.open orelse return null;
        self.open = null;
        c.partial = true;
        return c;
    }
};

/// The JSON document for a closed interval, written into `buf`; null if it does not fit.
pub fn json(c: Counts, buf: []u8) ?[]const u8 {
    return std.fmt.bufPrint(buf, "{{\"start_ms\":{d},\"near\":{d},\"mid\":{d},\"far\":{d},\"unknown\":{d},\"sightings\":{d},\"partial\":{}}}", .{ c.start_ms, c.near, c.mid, c.far, c.unknown, c.sightings(), c.partial }) catch null;
}

test "each sighting lands in its band, the edges included" {
    var w = Intervals{ .length_ms = 60_000 };
    for ([_]?i8{ -60, -59, -61, -75, -76, -95, null }, 0..) |dbm, i| {
        try std.testing.expect(w.add(61_000 + i, dbm) == null);
    }
    const c = w.advance(120_000).?;
    try std.testing.expectEqual(Counts{ .start_ms = 60_000, .near = 2, .mid = 2, .far = 2, .unknown = 1 }, c);
    var buf: [200]u8 = undefined;
    try std.testing.expectEqualStrings(
        "{\"start_ms\":60000,\"near\":2,\"mid\":2,\"far\":2,\"unknown\":1,\"sightings\":7,\"partial\":false}",
        json(c, &buf).?,
    );
}

test "a gap closes the old interval first; stop publishes the open one as partial, once" {
    var w = Intervals{ .length_ms = 60_000 };
    _ = w.add(130_000, -50);
    const closed = w.add(250_000, -80).?;
    try std.testing.expect(closed.start_ms == 120_000 and closed.near == 1 and !closed.partial);
    const c = w.stop().?;
    try std.testing.expect(c.partial and c.start_ms == 240_000 and c.far == 1);
    try std.testing.expect(w.stop() == null);
    var small: [8]u8 = undefined;
    try std.testing.expect(json(c, &small) == null);
}
