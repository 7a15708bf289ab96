//! Wall-clock time since the Unix epoch, as the spool (arrival times, queue ids), the delivery
//! scheduler (due times), the relay's gauges and DSNs (their Date and Message-ID) count it.
//! Intervals (timeouts, rate limits, caches) use the monotonic `Instant` and are not here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch; a clock set before 1970 reads as the epoch rather than failing.
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Whole seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    since_epoch().as_secs()
}

/// Microseconds since the Unix epoch (a u64 of them lasts 584,000 years; saturates after).
pub fn now_micros() -> u64 {
    u64::try_from(since_epoch().as_micros()).unwrap_or(u64::MAX)
}

/// Whole days since the Unix epoch (UTC), as SRS stamps them.
pub fn days_since_epoch() -> u64 {
    now_secs() / 86_400
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_agree() {
        let secs = now_secs();
        let micros = now_micros();
        let later = now_secs();
        // 2020-01-01: a clock read as the epoch would fail here.
        assert!(secs > 1_577_836_800, "{secs}");
        assert!(
            (secs..=later).contains(&(micros / 1_000_000)),
            "{secs} {micros} {later}"
        );
    }
}
