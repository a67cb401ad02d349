//! A frame flood from inside a lab namespace: whole Ethernet frames sent
//! round-robin on an AF_PACKET socket as fast as one thread can, for a
//! while (the in-situ row of `cargo xtask bench dataplane`).

use std::{
    io,
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    net::if_::if_nametoindex,
    sys::socket::{send, MsgFlags},
};

use super::netns;

/// What a flood sent.
#[derive(Clone, Copy, Debug)]
pub struct Flooded {
    pub frames: u64,
    pub elapsed: Duration,
}

/// Sends `frames` round-robin from `interface` in namespace `ns` for
/// `duration`. A full transmit queue (`ENOBUFS`) is waited out, not
/// counted; any other send error ends the flood with it.
pub fn flood(
    ns: &str,
    interface: &str,
    frames: &[Vec<u8>],
    duration: Duration,
) -> io::Result<Flooded> {
    if frames.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no frames to send",
        ));
    }
    netns::in_namespace(ns, || {
        let ifindex = if_nametoindex(interface)?;
        // Protocol 0: the socket receives nothing, so replies do not queue up.
        let fd = speaker::announce::listen::open_packet_socket(ifindex, 0, false)?;
        let started = Instant::now();
        let mut sent = 0u64;
        let mut rounds = 0u64;
        // The clock is read every 32 rounds, out of the hot loop.
        while !rounds.is_multiple_of(32) || started.elapsed() < duration {
            rounds += 1;
            for frame in frames {
                match send(fd.as_raw_fd(), frame, MsgFlags::empty()) {
                    Ok(_) => sent += 1,
                    Err(Errno::ENOBUFS) => std::thread::yield_now(),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(Flooded {
            frames: sent,
            elapsed: started.elapsed(),
        })
    })
}
