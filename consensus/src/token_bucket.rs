//! A token bucket on a caller's clock: the rate limit for serving sync
//! to a peer, and for a client's entries and bytes (admission quotas).
//!
//! Sans-IO like the rest of the crate: every call takes `now`, a
//! [`Duration`] since the caller's origin, which must not go backwards
//! (a `now` earlier than the last one refills nothing).

use std::time::Duration;

/// Refills at `per_second` tokens a second up to `burst`; starts full.
/// The level may go below zero by [`TokenBucket::charge`]: a cost known
/// only after the work (the bytes of an answer) is paid back by waiting.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    per_second: u64,
    burst: u64,
    /// Tokens now, in billionths (so refills of a few nanoseconds count).
    level_nanos: i128,
    updated: Duration,
}

const NANOS: i128 = 1_000_000_000;

impl TokenBucket {
    /// A full bucket. `per_second` = 0 never refills.
    pub fn new(per_second: u64, burst: u64, now: Duration) -> Self {
        TokenBucket {
            per_second,
            burst,
            level_nanos: burst as i128 * NANOS,
            updated: now,
        }
    }

    fn refill(&mut self, now: Duration) {
        let Some(elapsed) = now.checked_sub(self.updated) else {
            return;
        };
        self.updated = now;
        let added = elapsed.as_nanos() as i128 * self.per_second as i128;
        self.level_nanos = (self.level_nanos + added).min(self.burst as i128 * NANOS);
    }

    /// How long until the level reaches `amount` (zero if it has).
    fn wait_for(&self, amount: u64) -> Duration {
        let missing = amount as i128 * NANOS - self.level_nanos;
        if missing <= 0 {
            return Duration::ZERO;
        }
        if self.per_second == 0 {
            return Duration::MAX;
        }
        let per_second = self.per_second as i128;
        let nanos = (missing + per_second - 1) / per_second;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Takes `amount` tokens if the bucket holds them; else how long until
    /// it will (never, as [`Duration::MAX`], if `amount` exceeds the burst).
    pub fn try_take(&mut self, now: Duration, amount: u64) -> Result<(), Duration> {
        self.can_take(now, amount)?;
        self.level_nanos -= amount as i128 * NANOS;
        Ok(())
    }

    /// [`TokenBucket::try_take`] without the taking: whether `amount`
    /// could be taken now (so that two buckets are charged both or
    /// neither).
    pub fn can_take(&mut self, now: Duration, amount: u64) -> Result<(), Duration> {
        self.refill(now);
        if amount > self.burst {
            return Err(Duration::MAX);
        }
        let wait = self.wait_for(amount);
        if !wait.is_zero() {
            return Err(wait);
        }
        Ok(())
    }

    /// Whether the level is above zero (work may start, to be paid by
    /// [`TokenBucket::charge`]); else how long until it is.
    pub fn has_credit(&mut self, now: Duration) -> Result<(), Duration> {
        self.refill(now);
        if self.level_nanos > 0 {
            return Ok(());
        }
        Err(self.wait_for(0).max(Duration::from_nanos(1)))
    }

    /// Puts back `amount` tokens taken before (never above the burst).
    pub fn give_back(&mut self, amount: u64) {
        self.level_nanos =
            (self.level_nanos + amount as i128 * NANOS).min(self.burst as i128 * NANOS);
    }

    /// Takes `amount` tokens, going below zero if need be: over any
    /// span, what was taken stays within the burst, the rate times the
    /// span, and the last charge.
    pub fn charge(&mut self, amount: u64) {
        self.level_nanos -= amount as i128 * NANOS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn refills_at_the_rate_up_to_the_burst_and_says_how_long_to_wait() {
        let mut bucket = TokenBucket::new(1000, 10, Duration::ZERO);
        assert_eq!(bucket.try_take(Duration::ZERO, 10), Ok(()));
        assert_eq!(bucket.try_take(Duration::ZERO, 1), Err(MS));
        assert_eq!(bucket.try_take(5 * MS, 6), Err(MS));
        assert_eq!(bucket.try_take(6 * MS, 6), Ok(()));
        // Never beyond the burst, however long it rested.
        assert_eq!(
            bucket.try_take(Duration::from_secs(60), 11),
            Err(Duration::MAX)
        );
        assert_eq!(bucket.try_take(Duration::from_secs(60), 10), Ok(()));
        // A clock going backwards refills nothing.
        assert_eq!(bucket.try_take(Duration::from_secs(1), 1), Err(MS));
    }

    #[test]
    fn a_charge_below_zero_is_paid_back_by_waiting() {
        let mut bucket = TokenBucket::new(1000, 10, Duration::ZERO);
        assert_eq!(bucket.has_credit(Duration::ZERO), Ok(()));
        bucket.charge(15);
        // 5 in debt: credit again after 5 ms and a bit.
        assert!(bucket.has_credit(4 * MS).is_err());
        assert_eq!(bucket.has_credit(6 * MS), Ok(()));
        // A large charge is paid back in full.
        bucket.charge(1_000);
        assert_eq!(bucket.has_credit(6 * MS), Err(999 * MS));
        let mut never = TokenBucket::new(0, 1, Duration::ZERO);
        assert_eq!(never.try_take(Duration::ZERO, 1), Ok(()));
        assert_eq!(
            never.try_take(Duration::from_secs(9), 1),
            Err(Duration::MAX)
        );
    }
}
