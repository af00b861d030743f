//! {{name}}: drops sightings weaker than a signal threshold (devices outside the store) and
//! counts what it passed and dropped per window of pipeline time. Plain Zig with no WIT types,
//! so `zig test gate.zig` runs its tests on this machine.
const std = @import("std");

pub const Counts = struct {
    start_ms: u64,
    passed: u32,
    dropped: u32,
};

pub const Gate = struct {
    min_dbm: i8,
    length_ms: u64,
    open: bool = false,
    start_ms: u64 = 0,
    passed: u32 = 0,
    dropped: u32 = 0,

    /// The verdict for one sighting: keep it unless the radio reported a signal below
    /// `min_dbm` (no reading: the device is not judged to be outside).
    pub fn keeps(self: *const Gate, dbm: ?i8) bool {
        const d = dbm orelse return true;
        return d >= self.min_dbm;
    }

    /// Pipeline time reached `now_ms`: the open window's counts if that closed it.
    pub fn advance(self: *Gate, now_ms: u64) ?Counts {
        if (!self.open or now_ms < self.start_ms + self.length_ms) return null;
        return self.take();
    }

    /// One judged sighting; the previous window's counts if it had ended before `time_ms`.
    pub fn count(self: *Gate, time_ms: u64, kept: bool) ?Counts {
        const closed = self.advance(time_ms);
        if (!self.open) {
            self.open = true;
            self.start_ms = time_ms - time_ms % self.length_ms;
        }
        if (kept) self.passed +|= 1 else self.dropped +|= 1;
        return closed;
    }

    /// The capture ended: the open window, if there is one.
    pub fn stop(self: *Gate) ?Counts {
        if (!self.open) return null;
        return self.take();
    }

    fn take(self: *Gate) Counts {
        const c = Counts{ .start_ms = self.start_ms, .passed = self.passed, .dropped = self.dropped };
        self.open = false;
        self.passed = 0;
        self.dropped = 0;
        return c;
    }
};

/// The JSON document for a closed window, written into `buf`; null if it does not fit.
pub fn json(c: Counts, buf: []u8) ?[]const u8 {
    return std.fmt.bufPrint(buf, "{{\"start_ms\":{d},\"passed\":{d},\"dropped\":{d}}}", .{ c.start_ms, c.passed, c.dropped }) catch null;
}

test "weak sightings are dropped, and a window counts both verdicts" {
    var g = Gate{ .min_dbm = -70, .length_ms = 60_000 };
    try std.testing.expect(g.keeps(-70) and g.keeps(-40) and g.keeps(null));
    try std.testing.expect(!g.keeps(-71));
    try std.testing.expect(g.count(61_000, true) == null);
    try std.testing.expect(g.count(62_000, false) == null);
    try std.testing.expect(g.count(63_000, false) == null);
    try std.testing.expect(g.advance(119_999) == null);
    const c = g.advance(120_000).?;
    try std.testing.expectEqual(@as(u64, 60_000), c.start_ms);
    try std.testing.expectEqual(@as(u32, 1), c.passed);
    try std.testing.expectEqual(@as(u32, 2), c.dropped);
    var buf: [160]u8 = undefined;
    try std.testing.expectEqualStrings(
        "{\"start_ms\":60000,\"passed\":1,\"dropped\":2}",
        json(c, &buf).?,
    );
}

test "stop publishes the open window, once" {
    var g = Gate{ .min_dbm = -75, .length_ms = 60_000 };
    _ = g.count(250_000, true);
    const c = g.stop().?;
    try std.testing.expect(c.start_ms == 240_000 and c.passed == 1);
    try std.testing.expect(g.stop() == null);
    var small: [8]u8 = undefined;
    try std.testing.expect(json(c, &small) == null);
}
