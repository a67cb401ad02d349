//! All of the speaker's Kubernetes I/O, by job: the connection (`client`),
//! the resources it addresses (`resources`), the watches (`watch`) whose
//! objects `translate` converts and `diff` turns into changes, what the
//! speaker writes back (`status`: ServiceL2Status objects and Events), and
//! the speaker pods listed for gossip peers (`pods`), and whether a stop is
//! a restart (`restart`).

pub mod calls;
pub mod client;
mod diff;
pub mod events;
pub mod pods;
pub mod resources;
pub mod restart;
pub mod status;
mod translate;
pub mod watch;

pub use client::{client, SourceError};
pub use pods::speaker_pod_addresses;
pub use resources::{METALLB_GROUP, METALLB_VERSION};
pub use watch::{run, KubeSource, SkippedObjects};
