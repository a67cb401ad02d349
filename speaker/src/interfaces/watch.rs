//! Noticing interface changes as the kernel announces them, instead of
//! MetalLB's rescan every 10 s: a netlink socket in the RTMGRP_LINK group gets
//! an RTM_NEWLINK/RTM_DELLINK for every link added, removed, set up or down,
//! enslaved, renamed or given another MAC or flags. The messages are not
//! parsed: the daemon rescans ([`super::announce_interfaces`]) on each change.
//!
//! Address groups (RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR) are not joined:
//! no announce rule depends on addresses, and IPv6 DAD and privacy addresses
//! would wake the daemon for nothing.

use std::{io, time::Duration};

use tokio::io::{unix::AsyncFd, Interest};

use netlink_sys::Socket;

use super::netlink::{self, group, Received, RECEIVE_BUFFER};
use crate::error::{Error, Result};

/// How long a burst of notifications is given to arrive before it counts as
/// one change: `ip link add` of a veth pair sends a message per end and per
/// step, and carrier and operstate follow from the kernel's link-watch work.
pub const SETTLE: Duration = Duration::from_millis(50);

/// Link notifications of the network namespace that created it.
pub struct LinkWatcher {
    socket: AsyncFd<Socket>,
    buffer: Vec<u8>,
    /// A notification was taken but `changed` has not returned for it yet
    /// (its future was dropped while settling).
    pending: bool,
}

impl LinkWatcher {
    /// Subscribes to link notifications of the calling thread's network
    /// namespace. Must run inside a Tokio runtime. Create it before the first
    /// scan, so that no change between the scan and the subscription is lost.
    pub fn new() -> Result<Self> {
        let socket = netlink::open_socket(group::RTMGRP_LINK, true)
            .map_err(|e| Error::io("opening a netlink socket for link notifications", e))?;
        // SAFETY: the socket owns its descriptor, never replaces it, and
        // closes it only when dropped, with the AsyncFd.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(|e| {
                let e = io::Error::from(e);
                Error::io("registering the netlink socket with the runtime", e)
            })?;
        Ok(LinkWatcher {
            socket,
            buffer: vec![0; RECEIVE_BUFFER],
            pending: false,
        })
    }

    /// Resolves once any link changed: waits for a notification, lets the
    /// burst it starts arrive for [`SETTLE`], then takes everything queued, so
    /// one call covers one burst. An overrun of the socket (ENOBUFS: the
    /// kernel dropped notifications) counts as a change.
    ///
    /// Cancel-safe: when the future is dropped after a notification was taken,
    /// the next call reports that change.
    pub async fn changed(&mut self) -> Result<()> {
        if !self.pending {
            self.next_notification().await?;
            self.pending = true;
        }
        tokio::time::sleep(SETTLE).await;
        self.drain()?;
        self.pending = false;
        Ok(())
    }

    async fn next_notification(&mut self) -> Result<()> {
        let LinkWatcher { socket, buffer, .. } = self;
        loop {
            let mut ready = socket
                .readable()
                .await
                .map_err(|e| Error::io("waiting for link notifications", e))?;
            // try_io clears the readiness only when the receive would block,
            // so nothing already queued is ever waited past.
            match ready.try_io(|socket| netlink::receive(socket.get_ref(), buffer)) {
                Ok(Ok(Received::Datagram(_) | Received::Overrun)) => return Ok(()),
                Ok(Err(e)) => return Err(Error::io("reading link notifications", e)),
                Err(_would_block) => continue,
            }
        }
    }

    /// Takes every queued notification without waiting.
    fn drain(&mut self) -> Result<()> {
        loop {
            match netlink::receive(self.socket.get_ref(), &mut self.buffer) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(Error::io("reading link notifications", e)),
            }
        }
    }
}
