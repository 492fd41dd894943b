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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for v in [0, 1, 999, 1000, 1_700_000_000_123, -1] {
            assert_eq!(ms(&ts(v)), v);
        }
    }
}
