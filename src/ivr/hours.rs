//! Business hours: whether an `[hours.NAME]` entry is open at a wall-clock
//! instant. Pure arithmetic on seconds since the Unix epoch (UTC): the
//! entry's fixed UTC offset gives local time, [`civil_from_days`] the local
//! date (proleptic Gregorian), and the weekday follows from 1970-01-01
//! having been a Thursday.
//!
//! A [`Window`] is open from `open_min` (inclusive) to `close_min`
//! (exclusive), minutes after local midnight, on each day whose bit is set
//! (bit 0 = Monday … bit 6 = Sunday). `close_min` may be 1440 (open until
//! midnight). A window whose `close_min` is below its `open_min` runs
//! overnight: from `open_min` on a listed day until `close_min` the next
//! morning. A closed date is closed all day, and a window that starts on a
//! closed date does not run over into the next morning either.

use crate::config::contact::{HoursConfig, Window};

const SECS_PER_DAY: i64 = 86_400;
const MINS_PER_DAY: u16 = 1_440;

/// Whether `hours` is open at `wall_unix_s` (seconds since the epoch, UTC).
pub fn is_open(hours: &HoursConfig, wall_unix_s: i64) -> bool {
    let local = wall_unix_s.saturating_add(i64::from(hours.utc_offset_min) * 60);
    let day = local.div_euclid(SECS_PER_DAY);
    // invariant: rem_euclid(86400) / 60 < 1440, which fits a u16.
    let minute = (local.rem_euclid(SECS_PER_DAY) / 60) as u16;
    if is_closed_date(hours, day) {
        return false;
    }
    let today = weekday(day);
    let yesterday = weekday(day - 1);
    let yesterday_closed = is_closed_date(hours, day - 1);
    hours.windows.iter().any(|w| {
        let overnight = w.close_min < w.open_min;
        let end_today = if overnight { MINS_PER_DAY } else { w.close_min };
        (runs_on(w, today) && w.open_min <= minute && minute < end_today)
            || (overnight && !yesterday_closed && runs_on(w, yesterday) && minute < w.close_min)
    })
}

/// Whether `w` opens on `weekday` (0 = Monday … 6 = Sunday).
fn runs_on(w: &Window, weekday: u8) -> bool {
    w.days & (1 << weekday) != 0
}

/// The weekday of `day` days after 1970-01-01 (a Thursday): 0 = Monday …
/// 6 = Sunday.
fn weekday(day: i64) -> u8 {
    // invariant: rem_euclid(7) is in 0..7.
    (day + 3).rem_euclid(7) as u8
}

/// Whether the local date `day` (days since 1970-01-01) is one of the
/// entry's `closed_dates`.
fn is_closed_date(hours: &HoursConfig, day: i64) -> bool {
    if hours.closed_dates.is_empty() {
        return false;
    }
    let (y, m, d) = civil_from_days(day);
    hours
        .closed_dates
        .iter()
        .any(|&(cy, cm, cd)| i64::from(cy) == y && cm == m && cd == d)
}

/// The proleptic Gregorian date (year, month 1..=12, day 1..=31) of `days`
/// days after 1970-01-01; negative `days` are before it. Howard Hinnant's
/// `civil_from_days` (400-year eras of 146 097 days, years starting on
/// 1 March so that the leap day comes last).
pub fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146_096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from 1 March, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // invariant: m is in 1..=12 and d in 1..=31.
    (y, m as u8, d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inverse of [`civil_from_days`] (Hinnant's `days_from_civil`),
    /// written independently to check it.
    fn days_from_civil(y: i64, m: u8, d: u8) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(m);
        let mp = if m > 2 { m - 3 } else { m + 9 };
        let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    fn is_leap(y: i64) -> bool {
        (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
    }

    fn month_len(y: i64, m: u8) -> u8 {
        match m {
            2 if is_leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// Seconds since the epoch of local `y-m-d hh:mm` at UTC.
    fn at(y: i64, m: u8, d: u8, hh: i64, mm: i64) -> i64 {
        days_from_civil(y, m, d) * SECS_PER_DAY + hh * 3600 + mm * 60
    }

    const TUE: u8 = 1 << 1;
    const FRI: u8 = 1 << 4;
    const SAT: u8 = 1 << 5;
    const SUN: u8 = 1 << 6;
    const MON_FRI: u8 = 0b001_1111;

    fn window(days: u8, open: (u16, u16), close: (u16, u16)) -> Window {
        Window {
            days,
            open_min: open.0 * 60 + open.1,
            close_min: close.0 * 60 + close.1,
        }
    }

    /// Mon–Fri 08:00–18:00, Sat 09:00–13:00, at UTC.
    fn office() -> HoursConfig {
        HoursConfig {
            name: "office".into(),
            utc_offset_min: 0,
            windows: vec![
                window(MON_FRI, (8, 0), (18, 0)),
                window(SAT, (9, 0), (13, 0)),
            ],
            closed_dates: Vec::new(),
        }
    }

    #[test]
    fn ivr_hours_civil_from_days_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(civil_from_days(20_812), (2026, 12, 25));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
        assert_eq!(civil_from_days(-719_469), (0, 2, 29));
    }

    #[test]
    fn ivr_hours_civil_from_days_walks_every_day() {
        // From 1 Jan 1600 to past 2400 (leap rules of 4, 100 and 400), each
        // day is the one after the previous day's date and round-trips.
        let first = days_from_civil(1600, 1, 1);
        let mut prev = civil_from_days(first - 1);
        assert_eq!(prev, (1599, 12, 31));
        for day in first..days_from_civil(2401, 3, 1) {
            let (y, m, d) = civil_from_days(day);
            let (py, pm, pd) = prev;
            let expected = if pd < month_len(py, pm) {
                (py, pm, pd + 1)
            } else if pm < 12 {
                (py, pm + 1, 1)
            } else {
                (py + 1, 1, 1)
            };
            assert_eq!((y, m, d), expected, "day {day}");
            assert_eq!(days_from_civil(y, m, d), day);
            prev = (y, m, d);
        }
    }

    #[test]
    fn ivr_hours_weekday_from_epoch() {
        assert_eq!(weekday(0), 3, "1970-01-01 was a Thursday");
        assert_eq!(weekday(20_759), 0, "2026-11-02 is a Monday");
        assert_eq!(weekday(20_812), 4, "2026-12-25 is a Friday");
        assert_eq!(weekday(-4), 6, "1969-12-28 was a Sunday");
    }

    #[test]
    fn ivr_hours_open_across_weekdays() {
        let h = office();
        // Week of Monday 2026-11-02.
        for d in 2..=6 {
            assert!(is_open(&h, at(2026, 11, d, 8, 0)), "weekday {d} 08:00");
            assert!(is_open(&h, at(2026, 11, d, 17, 59)), "weekday {d} 17:59");
            assert!(!is_open(&h, at(2026, 11, d, 7, 59)), "weekday {d} 07:59");
            assert!(!is_open(&h, at(2026, 11, d, 18, 0)), "weekday {d} 18:00");
        }
        assert!(is_open(&h, at(2026, 11, 7, 9, 0)), "Saturday morning");
        assert!(!is_open(&h, at(2026, 11, 7, 13, 0)), "Saturday afternoon");
        assert!(!is_open(&h, at(2026, 11, 7, 8, 30)), "Saturday, before 9");
        assert!(!is_open(&h, at(2026, 11, 8, 10, 0)), "Sunday");
        // The last second of a minute still counts as that minute.
        assert!(is_open(&h, at(2026, 11, 2, 17, 59) + 59));
    }

    #[test]
    fn ivr_hours_utc_offset_moves_the_day() {
        // Tokyo: Monday 08:00 local is Sunday 23:00 UTC.
        let mut h = office();
        h.utc_offset_min = 9 * 60;
        assert!(is_open(&h, at(2026, 11, 1, 23, 0)));
        assert!(!is_open(&h, at(2026, 11, 1, 22, 59)));
        // Friday 17:59 local is Friday 08:59 UTC; Friday 18:00 local closed.
        assert!(is_open(&h, at(2026, 11, 6, 8, 59)));
        assert!(!is_open(&h, at(2026, 11, 6, 9, 0)));
        // New York in winter (-05:00): Friday 22:30 UTC is Friday 17:30
        // local (open), Saturday 00:30 UTC is Friday 19:30 local (closed),
        // Saturday 14:00 UTC is Saturday 09:00 local (open).
        h.utc_offset_min = -5 * 60;
        assert!(is_open(&h, at(2026, 11, 6, 22, 30)));
        assert!(!is_open(&h, at(2026, 11, 7, 0, 30)));
        assert!(is_open(&h, at(2026, 11, 7, 14, 0)));
        assert!(!is_open(&h, at(2026, 11, 7, 13, 59)));
        // A half-hour offset (India, +05:30).
        h.utc_offset_min = 5 * 60 + 30;
        assert!(is_open(&h, at(2026, 11, 2, 2, 30)));
        assert!(!is_open(&h, at(2026, 11, 2, 2, 29)));
    }

    #[test]
    fn ivr_hours_closed_dates_all_day() {
        let mut h = office();
        h.closed_dates = vec![(2026, 12, 25)];
        // Friday 25 December: closed all day; Thursday and Monday open.
        assert!(!is_open(&h, at(2026, 12, 25, 8, 0)));
        assert!(!is_open(&h, at(2026, 12, 25, 12, 0)));
        assert!(is_open(&h, at(2026, 12, 24, 12, 0)));
        assert!(is_open(&h, at(2026, 12, 28, 12, 0)));
        // The date is local: at +10:00, 24 December 23:00 UTC is 25
        // December 09:00 local (closed), 24 December 12:00 UTC is open.
        h.utc_offset_min = 10 * 60;
        assert!(!is_open(&h, at(2026, 12, 24, 23, 0)));
        assert!(is_open(&h, at(2026, 12, 24, 2, 0)));
    }

    #[test]
    fn ivr_hours_day_boundaries_and_overnight_windows() {
        // Friday 22:00 – Saturday 02:00, and all of Sunday.
        let h = HoursConfig {
            name: "late".into(),
            utc_offset_min: 0,
            windows: vec![window(FRI, (22, 0), (2, 0)), window(SUN, (0, 0), (24, 0))],
            closed_dates: Vec::new(),
        };
        assert!(!is_open(&h, at(2026, 11, 6, 21, 59)));
        assert!(is_open(&h, at(2026, 11, 6, 22, 0)));
        assert!(is_open(&h, at(2026, 11, 6, 23, 59) + 59));
        assert!(is_open(&h, at(2026, 11, 7, 0, 0)), "Saturday midnight");
        assert!(is_open(&h, at(2026, 11, 7, 1, 59)));
        assert!(!is_open(&h, at(2026, 11, 7, 2, 0)));
        assert!(!is_open(&h, at(2026, 11, 7, 23, 59)), "Saturday night");
        assert!(is_open(&h, at(2026, 11, 8, 0, 0)), "Sunday starts");
        assert!(is_open(&h, at(2026, 11, 8, 23, 59) + 59), "Sunday ends");
        assert!(!is_open(&h, at(2026, 11, 9, 0, 0)), "Monday");
        // A window on Tuesday only does not run over from Monday.
        let tue = HoursConfig {
            windows: vec![window(TUE, (22, 0), (2, 0))],
            ..h.clone()
        };
        assert!(!is_open(&tue, at(2026, 11, 3, 1, 0)), "Tuesday 01:00");
        assert!(is_open(&tue, at(2026, 11, 4, 1, 0)), "Wednesday 01:00");
        // A window starting on a closed date does not run into the morning;
        // a closed morning ends the previous night's window.
        let mut xmas = HoursConfig {
            windows: vec![window(MON_FRI, (22, 0), (2, 0))],
            ..h
        };
        xmas.closed_dates = vec![(2026, 12, 24)];
        assert!(!is_open(&xmas, at(2026, 12, 24, 1, 0)));
        assert!(!is_open(&xmas, at(2026, 12, 24, 23, 0)));
        assert!(!is_open(&xmas, at(2026, 12, 25, 1, 0)));
        assert!(is_open(&xmas, at(2026, 12, 25, 23, 0)));
        assert!(is_open(&xmas, at(2026, 12, 23, 23, 0)));
    }

    #[test]
    fn ivr_hours_no_windows_never_open() {
        let h = HoursConfig {
            windows: Vec::new(),
            ..office()
        };
        assert!(!is_open(&h, at(2026, 11, 2, 12, 0)));
        let all = HoursConfig {
            windows: vec![window(0x7f, (0, 0), (24, 0))],
            ..office()
        };
        assert!(is_open(&all, at(2026, 11, 2, 12, 0)));
        assert!(is_open(&all, i64::MIN), "extremes do not overflow");
        assert!(is_open(&all, i64::MAX));
    }
}
