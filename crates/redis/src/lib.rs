//! Redis-backed shared state (work in progress).
