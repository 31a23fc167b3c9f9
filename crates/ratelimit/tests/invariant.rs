//! Property: for any arrival sequence and any window of length w, the admitted cost is at most
//! burst + rate · w; and the store's decisions match a simple reference token bucket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use rampart_ratelimit::{Decision, MemoryStore, Quota, Rate};
use tokio::time::Instant;

const NS_PER_MIN: u128 = 60_000_000_000;

/// The reference: a token bucket holding `level` (in units × 60·10⁹), refilled by `per_minute`
/// per nanosecond up to `burst` × 60·10⁹.
struct Reference {
    level: u128,
    last: u128,
    rate: Rate,
}

impl Reference {
    fn new(rate: Rate) -> Self {
        Self {
            level: u128::from(rate.burst) * NS_PER_MIN,
            last: 0,
            rate,
        }
    }
    fn admit(&mut self, now: u128, cost: u64) -> bool {
        let cap = u128::from(self.rate.burst) * NS_PER_MIN;
        self.level = (self.level + (now - self.last) * u128::from(self.rate.per_minute)).min(cap);
        self.last = now;
        let need = u128::from(cost) * NS_PER_MIN;
        if cost <= self.rate.burst && self.level >= need {
            self.level -= need;
            true
        } else {
            false
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn admitted_cost_is_bounded_in_every_window(
        per_minute in 1u64..20_000,
        burst in 1u64..2_000,
        arrivals in prop::collection::vec((0u64..3_000_000_000, 1u64..300), 1..200),
        tokens_dimension in any::<bool>(),
    ) {
        let base = Instant::now();
        let offset = Arc::new(AtomicU64::new(0));
        let clock = {
            let offset = offset.clone();
            move || base + Duration::from_nanos(offset.load(Ordering::SeqCst))
        };
        let store = MemoryStore::builder().clock(clock).build();
        let rate = Rate::new(per_minute, burst);
        let quota = if tokens_dimension {
            Quota { tokens: Some(rate), ..Quota::default() }
        } else {
            Quota { requests: Some(Rate::new(per_minute, burst)), ..Quota::default() }
        };
        let mut reference = Reference::new(rate);
        let mut now: u64 = 0;
        let mut admitted: Vec<(u64, u64)> = Vec::new();
        for (gap, cost) in arrivals {
            now += gap;
            offset.store(now, Ordering::SeqCst);
            // The requests dimension charges 1 per request.
            let cost = if tokens_dimension { cost } else { 1 };
            let got = matches!(store.acquire_now("k", &quota, cost), Decision::Admitted(_));
            let want = reference.admit(u128::from(now), cost);
            prop_assert_eq!(got, want, "at {} ns, cost {}", now, cost);
            if got {
                admitted.push((now, cost));
            }
        }
        for i in 0..admitted.len() {
            let mut sum: u128 = 0;
            for j in i..admitted.len() {
                sum += u128::from(admitted[j].1);
                let w = u128::from(admitted[j].0 - admitted[i].0);
                prop_assert!(
                    sum * NS_PER_MIN <= u128::from(burst) * NS_PER_MIN + u128::from(per_minute) * w,
                    "window {}..{}: {} admitted", i, j, sum
                );
            }
        }
    }

    #[test]
    fn refunds_never_overfill_and_overage_is_paid_back(
        per_minute in 1u64..20_000,
        burst in 10u64..2_000,
        steps in prop::collection::vec((0u64..2_000_000_000, 1u64..10, 0u64..20), 1..100),
    ) {
        let base = Instant::now();
        let offset = Arc::new(AtomicU64::new(0));
        let clock = {
            let offset = offset.clone();
            move || base + Duration::from_nanos(offset.load(Ordering::SeqCst))
        };
        let store = MemoryStore::builder().clock(clock).build();
        let rate = Rate::new(per_minute, burst);
        let quota = Quota { tokens: Some(rate), ..Quota::default() };
        let mut now = 0;
        for (gap, reserve, actual) in steps {
            now += gap;
            offset.store(now, Ordering::SeqCst);
            if let Decision::Admitted(a) = store.acquire_now("k", &quota, reserve) {
                let before = a.snapshot.tokens.unwrap().remaining;
                rampart_ratelimit::RateLimitStore::settle(&store, "k", a.id, &rate, reserve, actual);
                // Check with a zero-cost probe: what is left now.
                let Decision::Admitted(after) = store.acquire_now("k", &quota, 0) else {
                    // Overage can push the bucket into debt: then nothing is left.
                    prop_assert!(actual > reserve);
                    continue;
                };
                let after = after.snapshot.tokens.unwrap().remaining;
                prop_assert!(after <= burst);
                let expect = (before + reserve).saturating_sub(actual).min(burst);
                prop_assert_eq!(after, expect);
            }
        }
    }
}
