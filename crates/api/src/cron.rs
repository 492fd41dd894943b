//! UNIX cron expressions, as `ScheduleWf` takes them: five fields (minute, hour, day of month,
//! month, day of week), evaluated in UTC on whole minutes.
//!
//! Pure arithmetic on milliseconds since the epoch, so the state machine can compute a
//! schedule's next time from the log entry's time and every replica gets the same answer.
//!
//! Fields accept `*`, numbers, ranges `a-b`, steps `*/n`, `a-b/n` and `a/n` (from `a` to the
//! field's end), and lists of these separated by commas. Months accept `JAN`-`DEC`, days of the
//! week `SUN`-`SAT` (0 and 7 are both Sunday). As in Vixie cron, when both the day of month and
//! the day of the week are restricted (neither starts with `*`), a day matching either one
//! matches. `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight` and `@hourly`
//! stand for their usual expressions.

use thiserror::Error;

const MINUTE_MS: i64 = 60_000;
const DAY_MINUTES: i64 = 24 * 60;
/// How far ahead a next time is looked for: eight years cover every February 29th (2100 is not
/// a leap year), so an expression with no time in them never has one.
const SEARCH_DAYS: i64 = 8 * 366;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CronError {
    #[error(
        "a cron expression has five fields (minute hour day-of-month month day-of-week), got {0}"
    )]
    FieldCount(usize),
    #[error("{field} field: '{text}' is not a number, range, step or name in {min}-{max}")]
    BadItem {
        field: &'static str,
        text: String,
        min: u32,
        max: u32,
    },
    #[error("unknown cron macro '{0}'")]
    UnknownMacro(String),
}

/// A parsed expression: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    /// Whether the day-of-month / day-of-week field was restricted (did not start with `*`).
    dom_restricted: bool,
    dow_restricted: bool,
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
/// 7 is accepted and folded onto 0 (Sunday).
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

impl Field {
    fn value(&self, text: &str) -> Option<u32> {
        let v = if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
            i as u32 + self.min
        } else if !text.is_empty() && text.len() <= 2 && text.bytes().all(|b| b.is_ascii_digit()) {
            text.parse().ok()?
        } else {
            return None;
        };
        (self.min..=self.max).contains(&v).then_some(v)
    }

    /// The set of values `text` allows, as bits `1 << value`.
    fn parse(&self, text: &str) -> Result<u64, CronError> {
        let bad = || CronError::BadItem {
            field: self.name,
            text: text.to_string(),
            min: self.min,
            max: self.max,
        };
        let mut bits = 0u64;
        for item in text.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => {
                    let step: u32 =
                        if !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit()) {
                            s.parse().map_err(|_| bad())?
                        } else {
                            return Err(bad());
                        };
                    if step == 0 {
                        return Err(bad());
                    }
                    (r, Some(step))
                }
                None => (item, None),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (
                    self.value(a).ok_or_else(bad)?,
                    self.value(b).ok_or_else(bad)?,
                );
                if a > b {
                    return Err(bad());
                }
                (a, b)
            } else {
                let a = self.value(range).ok_or_else(bad)?;
                // `a/n` runs from a to the field's end; a lone `a` is just a.
                (a, if step.is_some() { self.max } else { a })
            };
            let mut v = lo;
            while v <= hi {
                bits |= 1 << v;
                v += step.unwrap_or(1);
            }
        }
        Ok(bits)
    }
}

impl Cron {
    pub fn parse(expr: &str) -> Result<Cron, CronError> {
        let expanded = match expr.trim() {
            m if m.starts_with('@') => match m.to_ascii_lowercase().as_str() {
                "@yearly" | "@annually" => "0 0 1 1 *",
                "@monthly" => "0 0 1 * *",
                "@weekly" => "0 0 * * 0",
                "@daily" | "@midnight" => "0 0 * * *",
                "@hourly" => "0 * * * *",
                _ => return Err(CronError::UnknownMacro(m.to_string())),
            },
            e => e,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [min, hour, dom, month, dow] = fields[..] else {
            return Err(CronError::FieldCount(fields.len()));
        };
        let mut days_of_week = DAY_OF_WEEK.parse(dow)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week | 1) & !(1 << 7);
        }
        Ok(Cron {
            minutes: MINUTE.parse(min)?,
            hours: HOUR.parse(hour)? as u32,
            days_of_month: DAY_OF_MONTH.parse(dom)? as u32,
            months: MONTH.parse(month)? as u16,
            days_of_week: days_of_week as u8,
            dom_restricted: !dom.starts_with('*'),
            dow_restricted: !dow.starts_with('*'),
        })
    }

    /// The first whole minute strictly after `after_ms` that the expression names, or `None`
    /// if it names none in the next eight years (such as `0 0 30 2 *`).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let first = after_ms.div_euclid(MINUTE_MS) + 1;
        let first_day = first.div_euclid(DAY_MINUTES);
        for day in first_day..first_day + SEARCH_DAYS {
            let from_minute = if day == first_day {
                first.rem_euclid(DAY_MINUTES)
            } else {
                0
            };
            if self.day_matches(day) {
                if let Some(m) = self.first_minute_from(from_minute) {
                    return (day * DAY_MINUTES + m).checked_mul(MINUTE_MS);
                }
            }
        }
        None
    }

    fn day_matches(&self, days_since_epoch: i64) -> bool {
        let (_, month, dom) = civil_from_days(days_since_epoch);
        if self.months & (1 << month) == 0 {
            return false;
        }
        // 1970-01-01 was a Thursday (4).
        let dow = (days_since_epoch + 4).rem_euclid(7) as u32;
        let dom_ok = self.days_of_month & (1 << dom) != 0;
        let dow_ok = self.days_of_week & (1 << dow) != 0;
        match (self.dom_restricted, self.dow_restricted) {
            (true, true) => dom_ok || dow_ok,
            _ => dom_ok && dow_ok,
        }
    }

    /// The first minute of a matching day at or after `from` (minutes since midnight).
    fn first_minute_from(&self, from: i64) -> Option<i64> {
        let (h0, m0) = (from / 60, from % 60);
        for h in h0..24 {
            if self.hours & (1 << h) == 0 {
                continue;
            }
            let start = if h == h0 { m0 } else { 0 };
            if let Some(m) = (start..60).find(|m| self.minutes & (1 << m) != 0) {
                return Some(h * 60 + m);
            }
        }
        None
    }
}

/// (year, month 1-12, day 1-31) of a day counted from 1970-01-01, in the proleptic Gregorian
/// calendar (the well-known era-based conversion: 400-year eras of 146,097 days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Milliseconds of a UTC date and time, computed independently of `civil_from_days` (by
    /// counting days per year and month), so the tests check the conversion too.
    fn at(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let mut days = 0;
        for year in 1970..y {
            days += if leap(year) { 366 } else { 365 };
        }
        let lens = [
            31,
            if leap(y) { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        days += lens[..(mo - 1) as usize].iter().sum::<i64>();
        days += i64::from(d) - 1;
        ((days * 24 + h) * 60 + mi) * 60_000
    }

    fn next(expr: &str, after: i64) -> Option<i64> {
        Cron::parse(expr).unwrap().next_after(after)
    }

    #[test]
    fn every_minute_is_the_next_whole_minute_strictly_after() {
        let t = at(2026, 11, 27, 12, 0);
        assert_eq!(next("* * * * *", t), Some(t + 60_000));
        assert_eq!(next("* * * * *", t + 1), Some(t + 60_000));
        assert_eq!(next("* * * * *", t + 59_999), Some(t + 60_000));
    }

    #[test]
    fn fixed_times_roll_over_days_months_and_years() {
        let t = at(2026, 11, 27, 12, 0);
        assert_eq!(next("30 15 * * *", t), Some(at(2026, 11, 27, 15, 30)));
        assert_eq!(next("0 8 * * *", t), Some(at(2026, 11, 28, 8, 0)));
        assert_eq!(next("5 4 10 2 *", t), Some(at(2027, 2, 10, 4, 5)));
        assert_eq!(next("0 0 1 1 *", t), Some(at(2027, 1, 1, 0, 0)));
        assert_eq!(next("@monthly", t), Some(at(2026, 12, 1, 0, 0)));
        assert_eq!(next("@hourly", t), Some(at(2026, 11, 27, 13, 0)));
    }

    #[test]
    fn steps_ranges_lists_and_names() {
        let t = at(2026, 11, 27, 12, 7);
        assert_eq!(next("*/15 * * * *", t), Some(at(2026, 11, 27, 12, 15)));
        assert_eq!(next("10-20/5 * * * *", t), Some(at(2026, 11, 27, 12, 10)));
        assert_eq!(next("50/5 * * * *", t), Some(at(2026, 11, 27, 12, 50)));
        assert_eq!(next("1,3,59 * * * *", t), Some(at(2026, 11, 27, 12, 59)));
        assert_eq!(next("0 0 * JAN,mar *", t), Some(at(2027, 1, 1, 0, 0)));
        // 2026-11-27 is a Friday: the next Monday is the 30th.
        assert_eq!(next("0 9 * * MON", t), Some(at(2026, 11, 30, 9, 0)));
        assert_eq!(next("0 9 * * 1-5", t), Some(at(2026, 11, 30, 9, 0)));
        // 7 is Sunday, as 0 is.
        assert_eq!(next("0 9 * * 7", t), next("0 9 * * 0", t));
        assert_eq!(next("0 9 * * 0", t), Some(at(2026, 11, 29, 9, 0)));
    }

    #[test]
    fn restricted_day_of_month_and_day_of_week_match_either() {
        // The 1st of the month or any Monday, whichever comes first.
        let t = at(2026, 11, 27, 12, 0);
        assert_eq!(next("0 0 1 * MON", t), Some(at(2026, 11, 30, 0, 0)));
        let t = at(2026, 11, 30, 12, 0);
        assert_eq!(next("0 0 1 * MON", t), Some(at(2026, 12, 1, 0, 0)));
        // With a `*` day of the week only the day of month counts.
        assert_eq!(next("0 0 1 * *", t), Some(at(2026, 12, 1, 0, 0)));
    }

    #[test]
    fn leap_days_and_days_that_never_come() {
        let t = at(2026, 11, 27, 12, 0);
        assert_eq!(next("0 0 29 2 *", t), Some(at(2028, 2, 29, 0, 0)));
        assert_eq!(next("0 0 30 2 *", t), None);
        assert_eq!(next("0 0 31 4 *", t), None);
    }

    #[test]
    fn malformed_expressions_are_refused() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "*/0 * * * *",
            "5-1 * * * *",
            "a * * * *",
            "1,,2 * * * *",
            "-1 * * * *",
            "@sometimes",
        ] {
            assert!(Cron::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
