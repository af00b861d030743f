//! A store's day in its own time zone: where it starts and ends (23 or 25 hours on the days
//! clocks change), and how its times read on the clock in the store. Zones come from the
//! system's tz database (Debian's tzdata) through jiff, so a rule change reaches the service
//! with the OS's updates rather than with a rebuild.

use jiff::Timestamp;
use jiff::tz::TimeZone;

pub const HOUR: i64 = 3_600_000;

#[derive(Clone, Debug)]
pub struct Day {
    /// UTC ms of the local midnight that starts the day, and of the next one.
    pub start: i64,
    pub end: i64,
    tz: TimeZone,
}

fn zoned(ms: i64, tz: &TimeZone) -> jiff::Zoned {
    Timestamp::from_millisecond(ms)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_zoned(tz.clone())
}

impl Day {
    /// The local day that contains `ms`.
    pub fn containing(ms: i64, tz: &TimeZone) -> Day {
        let at = zoned(ms, tz);
        // Midnight can be skipped by a clock change; start_of_day then gives the first
        // instant of the day.
        let start = at.start_of_day().unwrap_or_else(|_| at.clone());
        let end = start
            .tomorrow()
            .and_then(|t| t.start_of_day())
            .map_or(start.timestamp().as_millisecond() + 24 * HOUR, |t| {
                t.timestamp().as_millisecond()
            });
        Day {
            start: start.timestamp().as_millisecond(),
            end,
            tz: tz.clone(),
        }
    }

    /// The same weekday `weeks` weeks before, by the calendar (not 168 hours per week).
    pub fn weeks_before(&self, weeks: i64) -> Day {
        let noon = zoned(self.start + 12 * HOUR, &self.tz);
        let before = noon
            .checked_sub(jiff::Span::new().weeks(weeks))
            .unwrap_or(noon);
        Day::containing(before.timestamp().as_millisecond(), &self.tz)
    }

    /// `HH:MM` on the store's clock.
    pub fn minute_label(&self, ms: i64) -> String {
        zoned(ms, &self.tz).strftime("%H:%M").to_string()
    }

    /// The hour of the day on the store's clock (0–23).
    pub fn hour_of(&self, ms: i64) -> i64 {
        i64::from(zoned(ms, &self.tz).hour())
    }

    /// Clock time in hours since midnight, for a chart's x axis.
    pub fn hours_in(&self, ms: i64) -> f64 {
        let t = zoned(ms, &self.tz);
        f64::from(t.hour()) + f64::from(t.minute()) / 60.0 + f64::from(t.second()) / 3600.0
    }

    /// `Friday 2024-03-22`.
    pub fn date(&self) -> String {
        zoned(self.start, &self.tz)
            .strftime("%A %Y-%m-%d")
            .to_string()
    }

    /// The zone's name as people read it (`Europe/Prague`, `UTC`).
    pub fn zone(&self) -> String {
        self.tz.iana_name().unwrap_or("UTC").to_owned()
    }
}

/// A zone by its tz database name, with an error that says where zones come from.
pub fn zone(name: &str) -> anyhow::Result<TimeZone> {
    TimeZone::get(name).map_err(|e| {
        anyhow::anyhow!(
            "time zone {name:?}: {e} (names are the tz database's, like Europe/Prague, read from the system's tzdata)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-03-22 23:30 UTC: still Friday in London, already Saturday in Prague (UTC+1).
    const LATE_FRIDAY_UTC: i64 = 1_711_150_200_000;

    #[test]
    fn a_days_bounds_and_labels_are_the_stores_own() {
        let utc = Day::containing(LATE_FRIDAY_UTC, &TimeZone::UTC);
        assert_eq!(utc.date(), "Friday 2024-03-22");
        assert_eq!(utc.minute_label(LATE_FRIDAY_UTC), "23:30");
        assert_eq!(utc.end - utc.start, 24 * HOUR);
        assert_eq!(utc.zone(), "UTC");

        let prague = zone("Europe/Prague").unwrap();
        let day = Day::containing(LATE_FRIDAY_UTC, &prague);
        assert_eq!(day.date(), "Saturday 2024-03-23");
        assert_eq!(day.minute_label(LATE_FRIDAY_UTC), "00:30");
        assert_eq!(day.hour_of(LATE_FRIDAY_UTC), 0);
        assert_eq!(day.start, LATE_FRIDAY_UTC - 30 * 60_000);
        assert_eq!(day.zone(), "Europe/Prague");
        // Four weeks before is a Saturday too; 2024-03-31 (clocks forward) has 23 hours.
        assert_eq!(day.weeks_before(4).date(), "Saturday 2024-02-24");
        let spring = Day::containing(day.start + 8 * 24 * HOUR + 12 * HOUR, &prague);
        assert_eq!(spring.date(), "Sunday 2024-03-31");
        assert_eq!(spring.end - spring.start, 23 * HOUR);
        // A week after the change, the same weekday starts at local midnight again (UTC+2).
        let after = Day::containing(spring.start + 7 * 24 * HOUR + 12 * HOUR, &prague);
        assert_eq!(after.weeks_before(1).start, spring.start);
        assert_eq!(after.minute_label(after.start), "00:00");
        assert!(zone("Mars/Olympus_Mons").is_err());
    }
}
