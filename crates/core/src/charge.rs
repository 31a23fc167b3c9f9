//! Charging parallel calls that were cancelled: a hedge or a fan-out call that lost reached its
//! provider, which bills at least the prompt it read, but it reports no usage.
//!
//! - [`CancelledCalls`] (a response extension): the calls a layer below the router (a hedge)
//!   cancelled on the way to this response; the router prices each at its model's input price
//!   and adds it to the request's cost, spend and budget settlement.
//! - [`CancelCharge`] (a request extension): a layer above the router (a fan-out) marks the
//!   call [`cancelled`](CancelCharge::cancel) before dropping it; the router then charges it
//!   its prompt estimate at the model's input price (instead of releasing its reservation, or
//!   charging its whole estimate when the answer had begun), and the layer reads back what the
//!   router charged for the call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::openai::Usage;
use crate::pricing::{MicroUsd, Price};

/// One upstream call that was cancelled after it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelledCall {
    /// The model the call was sent to.
    pub model: Arc<str>,
    /// The prompt tokens it is charged (an estimate: the call reported no usage).
    pub prompt_tokens: u64,
}

/// Response extension: the calls cancelled on the way to this response (losing hedges), to be
/// charged by a router above.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CancelledCalls(pub Vec<CancelledCall>);

/// The conservative charge of a cancelled call: `prompt_tokens` at `price`'s input price.
pub fn prompt_charge(price: &Price, prompt_tokens: u64) -> MicroUsd {
    let input_only = Price {
        input: price.input,
        cached_input: None,
        output: 0.0,
    };
    input_only.cost(&Usage {
        prompt_tokens,
        ..Usage::default()
    })
}

/// Request extension: a call that may be cancelled by a parallel layer above the router. The
/// layer marks it [`cancel`](Self::cancel)led before dropping it, and the router records what it
/// charged for the call (micro-dollars), which the layer reads back. Clones share the state.
#[derive(Debug, Clone, Default)]
pub struct CancelCharge(Arc<CancelState>);

#[derive(Debug, Default)]
struct CancelState {
    cancelled: AtomicBool,
    charged: AtomicU64,
}

impl CancelCharge {
    /// A new cell: not cancelled, nothing charged.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the call as cancelled by the layer (it lost, or missed a deadline): call this
    /// before dropping it.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::Release);
    }

    /// Whether the call was cancelled by the layer.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::Acquire)
    }

    /// Adds `micros` charged for the call.
    pub fn add(&self, micros: MicroUsd) {
        self.0.charged.fetch_add(micros, Ordering::AcqRel);
    }

    /// What the call was charged so far.
    pub fn charged(&self) -> MicroUsd {
        self.0.charged.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_charge_is_input_price_only() {
        let price = Price {
            input: 2.0,
            cached_input: Some(0.5),
            output: 8.0,
        };
        // 1,000 tokens at $2 per million = 2,000 micro-USD; output price ignored.
        assert_eq!(prompt_charge(&price, 1000), 2000);
        assert_eq!(prompt_charge(&price, 0), 0);
        let cell = CancelCharge::new();
        assert!(!cell.is_cancelled());
        cell.clone().cancel();
        assert!(cell.is_cancelled());
        cell.clone().add(5);
        cell.add(7);
        assert_eq!(cell.charged(), 12);
    }
}
