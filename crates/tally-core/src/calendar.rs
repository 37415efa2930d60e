//! Months in UTC: when a period longer than a month grants its next month, and which
//! calendar month a free tier's monthly reset belongs to.

use time::{Date, Month, OffsetDateTime, util::days_in_month};

/// The `k`th monthly anniversary of `start` (unix seconds): the same day of the month,
/// clamped to that month's last day, at the same time of day. `i64::MAX` past the
/// calendar's end, so that it is never due.
pub fn anniversary(start: i64, k: u32) -> i64 {
    let Ok(t) = OffsetDateTime::from_unix_timestamp(start) else { return i64::MAX };
    let months = i64::from(t.year()) * 12 + i64::from(u8::from(t.month())) - 1 + i64::from(k);
    let Ok(year) = i32::try_from(months.div_euclid(12)) else { return i64::MAX };
    let Ok(month) = Month::try_from(months.rem_euclid(12) as u8 + 1) else { return i64::MAX };
    let day = t.day().min(days_in_month(month, year));
    match Date::from_calendar_date(year, month, day) {
        Ok(date) => date.with_time(t.time()).assume_utc().unix_timestamp(),
        Err(_) => i64::MAX,
    }
}

/// The month of a period that started at `start` that time `t` is in: 0 until the
/// first anniversary, 1 until the second, and so on.
pub fn month_index(start: i64, t: i64) -> u32 {
    let (Ok(a), Ok(b)) = (OffsetDateTime::from_unix_timestamp(start), OffsetDateTime::from_unix_timestamp(t)) else {
        return 0;
    };
    let months = (i64::from(b.year()) - i64::from(a.year())) * 12 + i64::from(u8::from(b.month()))
        - i64::from(u8::from(a.month()));
    // The calendar difference, less one when `t` is before that month's anniversary.
    let mut k = u32::try_from(months.max(0)).unwrap_or(u32::MAX);
    while k > 0 && anniversary(start, k) > t {
        k -= 1;
    }
    k
}

/// The calendar month `t` is in, as `YYYY-MM`.
pub fn month_name(t: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(t) {
        Ok(d) => format!("{:04}-{:02}", d.year(), u8::from(d.month())),
        Err(_) => "out-of-range".into(),
    }
}

/// `t` as `YYYY-MM-DD HH:MM:SS UTC`, for what people read (`tally sync`'s report).
pub fn moment(t: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(t) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        Err(_) => format!("{t} (out of range)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_31_2026_NOON: i64 = 1_769_860_800;

    #[test]
    fn moments_read_as_utc_times() {
        assert_eq!(moment(JAN_31_2026_NOON), "2026-01-31 12:00:00 UTC");
        assert_eq!(moment(i64::MAX), format!("{} (out of range)", i64::MAX));
    }

    #[test]
    fn anniversaries_keep_the_day_and_clamp_to_short_months() {
        // 2026-01-31 12:00 → 2026-02-28 12:00 → 2026-03-31 12:00; a year on, 2027-01-31.
        assert_eq!(anniversary(JAN_31_2026_NOON, 0), JAN_31_2026_NOON);
        assert_eq!(anniversary(JAN_31_2026_NOON, 1), 1_772_280_000);
        assert_eq!(anniversary(JAN_31_2026_NOON, 2), 1_774_958_400);
        assert_eq!(anniversary(JAN_31_2026_NOON, 12), JAN_31_2026_NOON + 365 * 86_400);
    }

    #[test]
    fn the_month_index_turns_at_each_anniversary() {
        let feb_28 = anniversary(JAN_31_2026_NOON, 1);
        assert_eq!(month_index(JAN_31_2026_NOON, JAN_31_2026_NOON), 0);
        assert_eq!(month_index(JAN_31_2026_NOON, feb_28 - 1), 0);
        assert_eq!(month_index(JAN_31_2026_NOON, feb_28), 1);
        assert_eq!(month_index(JAN_31_2026_NOON, anniversary(JAN_31_2026_NOON, 2) - 1), 1);
        assert_eq!(month_index(JAN_31_2026_NOON, JAN_31_2026_NOON + 364 * 86_400), 11);
        assert_eq!(month_index(JAN_31_2026_NOON, 0), 0, "before the start");
    }

    #[test]
    fn extreme_times_never_panic() {
        assert_eq!(anniversary(i64::MAX, 1), i64::MAX);
        assert_eq!(month_index(i64::MIN, i64::MAX), 0);
        assert_eq!(month_name(JAN_31_2026_NOON), "2026-01");
    }
}
