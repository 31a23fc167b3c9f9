//! [`MemoryBudgetStore`]: budgets in process memory, one lock per decision.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rampart_core::MicroUsd;

use super::{
    BudgetStore, Periods, ReservationId, ReserveOutcome, ReserveReply, ScopeLimit, ScopeSpend,
    StoreError, StoreFuture, Window,
};

#[derive(Debug, Default, Clone, Copy)]
struct WindowState {
    period: u64,
    spent: MicroUsd,
    reserved: MicroUsd,
}

impl WindowState {
    fn roll(&mut self, period: u64) {
        if self.period != period {
            *self = WindowState {
                period,
                spent: 0,
                reserved: 0,
            };
        }
    }
    fn used(&self) -> MicroUsd {
        self.spent.saturating_add(self.reserved)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct ScopeState {
    day: WindowState,
    month: WindowState,
}

#[derive(Debug, Default)]
struct State {
    scopes: HashMap<Arc<str>, ScopeState>,
    /// Reservations not settled yet, with their amounts (one entry per request in flight).
    held: HashMap<ReservationId, MicroUsd>,
}

/// Budgets in memory: one map of scopes under one mutex, so a reservation across a tenant and
/// the global scope is atomic. State is per process (use a shared store across replicas).
#[derive(Debug, Default)]
pub struct MemoryBudgetStore {
    state: Mutex<State>,
}

impl MemoryBudgetStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the reservation `id` is held here (reserved and not settled yet).
    pub fn holds(&self, id: ReservationId) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .held
            .contains_key(&id)
    }
}

impl BudgetStore for MemoryBudgetStore {
    fn reserve(
        &self,
        id: ReservationId,
        scopes: &[ScopeLimit],
        amount: MicroUsd,
        at: Periods,
    ) -> StoreFuture<Result<ReserveReply, StoreError>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.held.contains_key(&id) {
            return StoreFuture::ready(Ok(ReserveReply::shared(ReserveOutcome::Reserved)));
        }
        let map = &mut state.scopes;
        let mut refused: Option<(Arc<str>, Window)> = None;
        let mut remaining = MicroUsd::MAX;
        for limit in scopes {
            let st = map.entry(limit.scope.clone()).or_default();
            st.day.roll(at.day);
            st.month.roll(at.month);
            for (window, state, cap) in [
                (Window::Day, &st.day, limit.daily),
                (Window::Month, &st.month, limit.monthly),
            ] {
                let Some(cap) = cap else { continue };
                let left = cap.saturating_sub(state.used());
                remaining = remaining.min(left);
                if amount > left && refused.is_none() {
                    refused = Some((limit.scope.clone(), window));
                }
            }
        }
        if let Some((scope, window)) = refused {
            return StoreFuture::ready(Ok(ReserveReply::shared(ReserveOutcome::Refused {
                scope,
                window,
                remaining,
            })));
        }
        for limit in scopes {
            if let Some(st) = map.get_mut(&limit.scope) {
                st.day.reserved = st.day.reserved.saturating_add(amount);
                st.month.reserved = st.month.reserved.saturating_add(amount);
            }
        }
        state.held.insert(id, amount);
        StoreFuture::ready(Ok(ReserveReply::shared(ReserveOutcome::Reserved)))
    }

    fn settle(
        &self,
        id: ReservationId,
        scopes: &[Arc<str>],
        at: Periods,
        actual: MicroUsd,
    ) -> StoreFuture<Result<(), StoreError>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // Unknown: settled already (or never reserved here).
        let Some(reserved) = state.held.remove(&id) else {
            return StoreFuture::ready(Ok(()));
        };
        for scope in scopes {
            let Some(st) = state.scopes.get_mut(scope) else {
                continue;
            };
            for (w, period) in [(&mut st.day, at.day), (&mut st.month, at.month)] {
                if w.period == period {
                    w.reserved = w.reserved.saturating_sub(reserved);
                    w.spent = w.spent.saturating_add(actual);
                }
            }
        }
        StoreFuture::ready(Ok(()))
    }

    fn spend(&self, scope: &str, at: Periods) -> StoreFuture<Result<ScopeSpend, StoreError>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = ScopeSpend::default();
        if let Some(st) = state.scopes.get(scope) {
            if st.day.period == at.day {
                out.day_spent = st.day.spent;
                out.day_reserved = st.day.reserved;
            }
            if st.month.period == at.month {
                out.month_spent = st.month.spent;
                out.month_reserved = st.month.reserved;
            }
        }
        StoreFuture::ready(Ok(out))
    }
}
