//! A stand-in Kubernetes API server for tests: enough of the apiserver's
//! REST API for kube-rs clients, watchers and the event recorder, with test
//! controls (compaction, injected faults, a request log). See README.md for
//! what is and is not emulated.
//!
//! [`Server::start`] serves on a thread of its own (with its own Tokio
//! runtime), so synchronous tests can use it; it stops on drop.

mod api_error;
mod controls;
mod discovery;
mod http;
pub mod kinds;
mod load;
mod reviews;
mod route;
mod selector;
mod server;
mod store;
mod tls;
mod watch;

pub use api_error::ApiError;
pub use controls::{Fault, RequestRecord};
pub use load::LoadError;
pub use reviews::{ReviewedUser, Reviews};
pub use server::{Options, Server, StartError};
pub use store::Part;
pub use tls::SERVICE_DNS_NAME;
