//! End-to-end tests for Rampart live in `tests/tests/`: the gateway built from its config, served
//! on loopback, called over HTTP, with simulated providers behind it.
