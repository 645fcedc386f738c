//! Open-loop pacing (`--rate`), as wrk2 does it. The target rate, in requests
//! per second over the whole run, becomes one fixed schedule per connection:
//! message `i` of a connection is *intended* to be sent at
//! `first + i × interval`, whether or not earlier replies have come back.
//!
//! Latency is measured from that intended time, not from the moment the message
//! actually left. A server that stalls for a second therefore shows a second of
//! latency on every message that should have been sent during the stall, instead
//! of one slow message and a quiet gap (the "coordinated omission" of
//! closed-loop tools). A connection that falls behind sends what is due at once,
//! up to `--pipeline` messages in flight; the excess waits, and its wait counts.
//!
//! Connections' schedules are staggered evenly over one interval, so the run's
//! sends are spread in time rather than fired in bursts.

use std::time::{Duration, Instant};

/// When each message of one connection is due.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    first: Instant,
    interval_ns: f64,
}

impl Schedule {
    /// Connection number `index` of `nr_connections`, each message carrying
    /// `ops_per_message` requests, the run paced at `rate_ops_per_s` requests/s.
    pub fn for_connection(
        start: Instant,
        rate_ops_per_s: f64,
        ops_per_message: u64,
        nr_connections: u32,
        index: u64,
    ) -> Schedule {
        let messages_per_s = rate_ops_per_s / ops_per_message as f64 / f64::from(nr_connections);
        let interval_ns = 1e9 / messages_per_s;
        let offset_ns = interval_ns * index as f64 / f64::from(nr_connections);
        Schedule {
            first: start + Duration::from_nanos(offset_ns as u64),
            interval_ns,
        }
    }

    /// When message `message` is intended to be sent.
    pub fn intended(&self, message: u64) -> Instant {
        self.first + Duration::from_nanos((message as f64 * self.interval_ns) as u64)
    }

    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_due_at_fixed_intervals_from_a_staggered_start() {
        let start = Instant::now();
        // 1 000 requests/s over 2 connections, 1 request per message: 500 messages/s each.
        let first = Schedule::for_connection(start, 1_000.0, 1, 2, 0);
        let second = Schedule::for_connection(start, 1_000.0, 1, 2, 1);
        assert_eq!(first.interval(), Duration::from_millis(2));
        assert_eq!(first.intended(0), start);
        assert_eq!(first.intended(3), start + Duration::from_millis(6));
        assert_eq!(second.intended(0), start + Duration::from_millis(1));
        assert_eq!(second.intended(3), start + Duration::from_millis(7));
    }

    #[test]
    fn the_run_as_a_whole_sends_at_the_target_rate() {
        let start = Instant::now();
        let one_second = start + Duration::from_secs(1);
        for (rate, ops, conns) in [(10_000.0, 1, 7), (123_456.0, 10, 50), (50.0, 1, 3)] {
            let due: u64 = (0..u64::from(conns))
                .map(|c| {
                    let schedule = Schedule::for_connection(start, rate, ops, conns, c);
                    (0..)
                        .take_while(|&m| schedule.intended(m) < one_second)
                        .count() as u64
                })
                .sum();
            let expected = rate / ops as f64;
            assert!(
                (due as f64 - expected).abs() <= f64::from(conns),
                "rate {rate}: {due} messages due in the first second, expected {expected}"
            );
        }
    }
}
