#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The budget store suite (`rampart_cost_router::testing`) against the in-memory store; the
//! Redis store runs the same suite in `rampart-redis`.

use std::sync::Arc;

use rampart_cost_router::{BudgetStore, MemoryBudgetStore};

async fn memory() -> (Arc<dyn BudgetStore>, ()) {
    (Arc::new(MemoryBudgetStore::new()), ())
}

rampart_cost_router::budget_store_suite!(memory);
