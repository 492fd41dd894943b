//! Conversions between the log's millisecond clock and protobuf timestamps.

use prost_types::Timestamp;

pub fn ts(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn ms(ts: &Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(ts.nanos) / 1_000_000)
}

/// `now + seconds`, saturating instead of overflowing on absurd inputs.
pub fn after_seconds(now_ms: i64, seconds: i64) -> i64 {
    now_ms.saturating_add(seconds.saturating_mul(1000))
}

/// Milliseconds since the epoch of an ISO-8601 instant such as `2030-01-01T09:30:00Z`,
/// `2030-01-01t09:30:00.250z` or `2030-01-01T11:30:00+02:00`: what a SLEEP node's `iso_date`
/// holds (LittleHorse parses it with Java's `Instant.parse`). A date, a time with seconds and
/// a zone (`Z` or `+HH:MM`) are required; a fraction beyond milliseconds is truncated. Leap
/// seconds (`:60`) are refused. Pure arithmetic, so every replica gets the same instant.
pub fn parse_iso_instant(s: &str) -> Result<i64, String> {
    let bad = |why: &str| format!("'{s}' is not an ISO-8601 instant ({why})");
    let b = s.as_bytes();
    let num = |at: usize, len: usize| -> Option<i64> {
        let digits = b.get(at..at + len)?;
        digits.iter().try_fold(0i64, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let sep = |at: usize, c: u8| b.get(at).is_some_and(|x| x.eq_ignore_ascii_case(&c));
    let (Some(year), Some(month), Some(day)) = (num(0, 4), num(5, 2), num(8, 2)) else {
        return Err(bad("expected YYYY-MM-DD"));
    };
    if !sep(4, b'-') || !sep(7, b'-') || !sep(10, b'T') {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    }
    let (Some(hour), Some(minute), Some(second)) = (num(11, 2), num(14, 2), num(17, 2)) else {
        return Err(bad("expected HH:MM:SS"));
    };
    if !sep(13, b':') || !sep(16, b':') {
        return Err(bad("expected HH:MM:SS"));
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad("month out of range")),
    };
    if day < 1 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return Err(bad("field out of range"));
    }
    let mut at = 19;
    let mut millis = 0;
    if sep(at, b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 3 {
                millis = millis * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return Err(bad("empty fraction"));
        }
        for _ in (at - start)..3 {
            millis *= 10;
        }
    }
    let offset_minutes = if sep(at, b'Z') && b.len() == at + 1 {
        0
    } else if matches!(b.get(at), Some(b'+' | b'-')) && b.len() == at + 6 && sep(at + 3, b':') {
        let (Some(h), Some(m)) = (num(at + 1, 2), num(at + 4, 2)) else {
            return Err(bad("bad zone offset"));
        };
        if h > 18 || m > 59 {
            return Err(bad("zone offset out of range"));
        }
        let sign = if b[at] == b'-' { -1 } else { 1 };
        sign * (h * 60 + m)
    } else {
        return Err(bad("expected a zone: Z or +HH:MM"));
    };
    // Days from 1970-01-01 to the civil date (proleptic Gregorian), after H. Hinnant.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Ok(seconds * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_instants_parse_to_the_epoch_millisecond() {
        for (text, want) in [
            ("1970-01-01T00:00:00Z", 0),
            ("1970-01-01T00:00:01.5Z", 1_500),
            ("2000-02-29T12:00:00Z", 951_825_600_000),
            ("2030-01-01T00:00:00Z", 1_893_456_000_000),
            ("2030-01-01t02:00:00.123456z", 1_893_463_200_123),
            ("2030-01-01T02:00:00+02:00", 1_893_456_000_000),
            ("2029-12-31T22:30:00-01:30", 1_893_456_000_000),
            ("1969-12-31T23:59:59Z", -1_000),
        ] {
            assert_eq!(parse_iso_instant(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn malformed_instants_are_refused_with_the_text() {
        for text in [
            "",
            "2030-01-01",
            "2030-01-01T00:00Z",
            "2030-01-01T00:00:00",
            "2030-01-01 00:00:00Z",
            "2030-13-01T00:00:00Z",
            "2029-02-29T00:00:00Z",
            "2030-01-01T24:00:00Z",
            "2030-01-01T23:59:60Z",
            "2030-01-01T00:00:00.Z",
            "2030-01-01T00:00:00+0200",
            "2030-01-01T00:00:00+19:00",
            "2030-01-01T00:00:00Zjunk",
            "２０３0-01-01T00:00:00Z",
        ] {
            let e = parse_iso_instant(text).expect_err(text);
            assert!(e.contains(text), "{e}");
        }
    }

    #[test]
    fn round_trips() {
        for v in [0, 1, 999, 1000, 1_700_000_000_123, -1] {
            assert_eq!(ms(&ts(v)), v);
        }
    }
}
