//! [`RetryBudget`]: a share of recent requests plus a small floor, over a sliding window.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::BudgetConfig;

/// Buckets the window slides by.
const SLOTS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    epoch: u64,
    deposits: u64,
    withdrawals: u64,
}

/// A retry budget shared by every request through a layer, as in Finagle and gRPC.
///
/// Each request deposits one; each retry or fallback attempt beyond a request's first
/// withdraws one. A withdrawal succeeds while `ratio × deposits − withdrawals +
/// min_per_second × ttl ≥ 1`, both counted over the last `ttl` (in ten buckets). So under a
/// failing upstream, upstream calls stay below `(1 + ratio) × requests + min_per_second × ttl`
/// per window: no retry storms.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    reserve: f64,
    bucket: Duration,
    origin: Instant,
    slots: Mutex<[Slot; SLOTS]>,
}

impl RetryBudget {
    /// A budget with `config` (assumed valid; a zero `ttl` is treated as 1 s).
    pub fn new(config: BudgetConfig) -> Self {
        let ttl = if config.ttl.is_zero() {
            Duration::from_secs(1)
        } else {
            config.ttl
        };
        let bucket = (ttl / SLOTS as u32).max(Duration::from_millis(1));
        Self {
            ratio: config.ratio.max(0.0),
            reserve: config.min_per_second.max(0.0) * ttl.as_secs_f64(),
            bucket,
            origin: Instant::now(),
            slots: Mutex::new([Slot::default(); SLOTS]),
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since / self.bucket.as_nanos().max(1)).unwrap_or(u64::MAX)
    }

    fn with_slots<T>(&self, f: impl FnOnce(&mut [Slot; SLOTS], u64) -> T) -> T {
        let epoch = self.epoch(Instant::now());
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = &mut slots[(epoch % SLOTS as u64) as usize];
        if slot.epoch != epoch {
            *slot = Slot {
                epoch,
                ..Slot::default()
            };
        }
        f(&mut slots, epoch)
    }

    fn live(slots: &[Slot; SLOTS], epoch: u64) -> impl Iterator<Item = &Slot> {
        slots
            .iter()
            .filter(move |s| s.epoch <= epoch && epoch - s.epoch < SLOTS as u64)
    }

    fn balance_of(&self, slots: &[Slot; SLOTS], epoch: u64) -> f64 {
        let (dep, wd) = Self::live(slots, epoch).fold((0u64, 0u64), |(d, w), s| {
            (d + s.deposits, w + s.withdrawals)
        });
        self.ratio * dep as f64 - wd as f64 + self.reserve
    }

    /// Records a request.
    pub fn deposit(&self) {
        self.with_slots(|slots, epoch| {
            let slot = &mut slots[(epoch % SLOTS as u64) as usize];
            slot.deposits = slot.deposits.saturating_add(1);
        });
    }

    /// Takes one retry from the budget; `false` (and nothing taken) when it is spent.
    pub fn try_withdraw(&self) -> bool {
        self.with_slots(|slots, epoch| {
            if self.balance_of(slots, epoch) < 1.0 {
                return false;
            }
            let slot = &mut slots[(epoch % SLOTS as u64) as usize];
            slot.withdrawals = slot.withdrawals.saturating_add(1);
            true
        })
    }

    /// Gives back a withdrawal that was not used (the candidate was refused without a call).
    pub fn refund(&self) {
        self.with_slots(|slots, epoch| {
            let current = (epoch % SLOTS as u64) as usize;
            // The newest live slot holding a withdrawal.
            let order = (0..SLOTS).map(|k| (current + SLOTS - k) % SLOTS);
            for i in order {
                let s = &mut slots[i];
                if s.epoch <= epoch && epoch - s.epoch < SLOTS as u64 && s.withdrawals > 0 {
                    s.withdrawals -= 1;
                    return;
                }
            }
        });
    }

    /// Retries available now (may be fractional or negative).
    pub fn balance(&self) -> f64 {
        self.with_slots(|slots, epoch| self.balance_of(slots, epoch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn share_plus_reserve_then_slides() {
        let b = RetryBudget::new(BudgetConfig {
            ratio: 0.5,
            min_per_second: 1.0,
            ttl: Duration::from_secs(2),
        });
        // Reserve: 2 retries.
        assert!(b.try_withdraw());
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
        // Four requests: two more.
        for _ in 0..4 {
            b.deposit();
        }
        assert!(b.try_withdraw());
        b.refund();
        assert!(b.try_withdraw());
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
        // After the window everything is forgotten: the reserve again.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!((b.balance() - 2.0).abs() < 1e-9);
    }
}
