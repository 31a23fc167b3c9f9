//! Token settle hooks: how a layer below a rate limiter (the cache) settles the reservations
//! made above it — to zero on a cache hit — without depending on the limiter's crate.
//!
//! Each limiter appends its hook to the [`SettleHooks`] request extension (several limiters may
//! be stacked, e.g. per tenant and per tenant + model). A hook's first call wins; the limiter's
//! own settle at the end of the body then does nothing.

use std::sync::Arc;

/// One reservation's settle hook: `settle(actual_tokens) -> bool` (false when already settled).
pub type SettleHook = Arc<dyn Fn(u64) -> bool + Send + Sync>;

/// Every token reservation made above this point of the stack, as a request extension.
#[derive(Clone, Default)]
pub struct SettleHooks {
    hooks: Vec<SettleHook>,
}

impl std::fmt::Debug for SettleHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettleHooks")
            .field("len", &self.hooks.len())
            .finish()
    }
}

impl SettleHooks {
    /// Adds a reservation's hook.
    pub fn push(&mut self, hook: SettleHook) {
        self.hooks.push(hook);
    }

    /// Settles every reservation to `actual` tokens; returns how many were still open.
    pub fn settle_all(&self, actual: u64) -> usize {
        self.hooks.iter().filter(|h| h(actual)).count()
    }

    /// How many reservations are registered.
    pub fn len(&self) -> usize {
        self.hooks.len()
    }

    /// Whether none are registered.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Appends `hook` to the request's `SettleHooks` extension (creating it when absent).
    pub fn add_to<B>(req: &mut http::Request<B>, hook: SettleHook) {
        match req.extensions_mut().get_mut::<SettleHooks>() {
            Some(hooks) => hooks.push(hook),
            None => {
                let mut hooks = SettleHooks::default();
                hooks.push(hook);
                req.extensions_mut().insert(hooks);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn stacked_hooks_settle_once_each() {
        let mut req = http::Request::new(());
        let a = Arc::new(AtomicBool::new(false));
        let b = Arc::new(AtomicBool::new(false));
        for flag in [a.clone(), b.clone()] {
            SettleHooks::add_to(
                &mut req,
                Arc::new(move |_| !flag.swap(true, Ordering::SeqCst)),
            );
        }
        let hooks = req.extensions().get::<SettleHooks>().unwrap();
        assert_eq!(hooks.len(), 2);
        assert_eq!(hooks.settle_all(0), 2);
        assert_eq!(hooks.settle_all(0), 0);
    }
}
