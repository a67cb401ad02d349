//! Shared test support: frame builders and network-namespace labs.
