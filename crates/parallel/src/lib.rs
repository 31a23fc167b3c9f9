//! Parallel multi-model calls (work in progress).
