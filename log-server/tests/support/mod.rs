//! Shared by the integration tests that need it.
pub mod ports;
pub mod proxy;
