//! {{name}}: sightings and randomized sightings per window of pipeline time. Plain Zig with
//! no WIT types, so `zig test window.zig` runs its tests on this machine.
const std = @import("std");

pub const Counts = struct {
    start_ms: u64,
    sightings: u32,
    randomized: u32,
    partial: bool,
};

pub const Window = struct {
    length_ms: u64,
    open: bool = false,
    start_ms: u64 = 0,
    sightings: u32 = 0,
    randomized: u32 = 0,

    /// Pipeline time reached `now_ms`: the open window's counts if that closed it.
    pub fn advance(self: *Window, now_ms: u64) ?Counts {
        if (!self.open or now_ms < self.start_ms + self.length_ms) return null;
        return self.take(false);
    }

    /// One sighting; the previous window's counts if it had ended before `time_ms`.
    pub fn add(self: *Window, time_ms: u64, randomized: bool) ?Counts {
        const closed = self.advance(time_ms);
        if (!self.open) {
            self.open = true;
            self.start_ms = time_ms - time_ms % self.length_ms;
        }
        self.sightings +|= 1;
        if (randomized) self.randomized +|= 1;
        return closed;
    }

    /// The capture ended: the open window, marked partial.
    pub fn stop(self: *Window) ?Counts {
        if (!self.open) return null;
        return self.take(true);
    }

    fn take(self: *Window, partial: bool) Counts {
        const c = Counts{
            .start_ms = self.start_ms,
            .sightings = self.sightings,
            .randomized = self.randomized,
            .partial = partial,
        };
        self.open = false;
        self.sightings = 0;
        self.randomized = 0;
        return c;
    }
};

/// The JSON document for a closed window, written into `buf`; null if it does not fit.
pub fn json(c: Counts, buf: []u8) ?[]const u8 {
    const partial = if (c.partial) "true" else "false";
    return std.fmt.bufPrint(buf, "{{\"start_ms\":{d},\"sightings\":{d},\"randomized\":{d},\"partial\":{s}}}", .{ c.start_ms, c.sightings, c.randomized, partial }) catch null;
}

test "a window counts its sightings and closes on time" {
    var w = Window{ .length_ms = 60_000 };
    try std.testing.expect(w.add(61_000, false) == null);
    try std.testing.expect(w.add(62_000, true) == null);
    try std.testing.expect(w.advance(119_999) == null);
    const c = w.advance(120_000).?;
    try std.testing.expectEqual(@as(u64, 60_000), c.start_ms);
    try std.testing.expectEqual(@as(u32, 2), c.sightings);
    try std.testing.expectEqual(@as(u32, 1), c.randomized);
    var buf: [160]u8 = undefined;
    try std.testing.expectEqualStrings(
        "{\"start_ms\":60000,\"sightings\":2,\"randomized\":1,\"partial\":false}",
        json(c, &buf).?,
    );
}

test "stop publishes the open window as partial, once" {
    var w = Window{ .length_ms = 60_000 };
    _ = w.add(250_000, false);
    const c = w.stop().?;
    try std.testing.expect(c.partial and c.start_ms == 240_000);
    try std.testing.expect(w.stop() == null);
    var small: [8]u8 = undefined;
    try std.testing.expect(json(c, &small) == null);
}
