//! `tcpdump -w` of what arrives at one interface of a lab namespace, read
//! back as raw Ethernet frames (the tests parse them with smoltcp, which
//! shares no code with the speaker).

use std::{
    fs::File,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use nix::sys::signal::Signal;

use super::{
    command::{Process, Sink, Spawn},
    tools,
};

static CAPTURE_SEQ: AtomicU32 = AtomicU32::new(0);

/// A running capture of incoming frames. Stopped with SIGINT (tcpdump then
/// flushes and exits); killed in `Drop` if still running.
pub struct Capture {
    process: Process,
    pcap: PathBuf,
    log: PathBuf,
}

impl Capture {
    /// Captures what `interface` in namespace `netns` receives, with the
    /// pcap `filter` (e.g. `"arp or icmp6"`); returns once tcpdump's socket
    /// is receiving.
    pub fn start(netns: &str, interface: &str, filter: &str) -> Capture {
        let dir = std::env::temp_dir();
        let stem = format!(
            "lab-capture-{}-{}-{interface}",
            std::process::id(),
            CAPTURE_SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let pcap = dir.join(format!("{stem}.pcap"));
        let log = dir.join(format!("{stem}.log"));
        tools::require("tcpdump");
        let log_file = File::create(&log).expect("creating the tcpdump log");
        let pcap_arg = pcap.to_string_lossy().into_owned();
        let process = Spawn::tool("tcpdump")
            .in_netns(netns)
            .args(["-i", interface, "-Q", "in", "-n", "-U"])
            .args(["--immediate-mode", "-s", "0", "-w", &pcap_arg])
            .arg(filter)
            .stdout(Sink::Null)
            .stderr(Sink::File(log_file))
            .process();
        let capture = Capture { process, pcap, log };
        // tcpdump says "listening on" once its socket is receiving.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(&capture.log).unwrap_or_default();
            if log.contains("listening on") {
                break;
            }
            if let Some(status) = capture.process.exit_status() {
                panic!("tcpdump exited ({status}) before capturing:\n{log}");
            }
            assert!(Instant::now() < deadline, "tcpdump did not start:\n{log}");
            thread::sleep(Duration::from_millis(20));
        }
        capture
    }

    /// What was captured so far, without stopping (`-U` writes each
    /// packet as it comes; a record being written may be left out).
    pub fn so_far(&self) -> Vec<Captured> {
        std::fs::read(&self.pcap)
            .ok()
            .filter(|bytes| bytes.len() >= 24)
            .map(|bytes| read_pcap(&bytes))
            .unwrap_or_default()
    }

    /// Stops tcpdump and returns every frame it recorded.
    pub fn stop(self) -> Vec<Captured> {
        // Only our own child, by its id; `ip netns exec` exec'd tcpdump.
        self.process.signal(Signal::SIGINT);
        assert!(
            self.process.wait(Duration::from_secs(10)).is_some(),
            "tcpdump ignored SIGINT"
        );
        let bytes = std::fs::read(&self.pcap).expect("reading the capture");
        read_pcap(&bytes)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if self.process.is_running() {
            self.process.signal(Signal::SIGKILL);
            let _ = self.process.wait(Duration::from_secs(10));
        }
        let _ = std::fs::remove_file(&self.pcap);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One captured frame and when it arrived.
pub struct Captured {
    pub at: SystemTime,
    pub frame: Vec<u8>,
}

/// The records of a classic pcap file (either byte order, µs or ns).
pub fn read_pcap(bytes: &[u8]) -> Vec<Captured> {
    assert!(bytes.len() >= 24, "pcap shorter than its header");
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let (swapped, nanos_per_unit) = match magic {
        0xa1b2_c3d4 => (false, 1000),
        0xa1b2_3c4d => (false, 1),
        0xd4c3_b2a1 => (true, 1000),
        0x4d3c_b2a1 => (true, 1),
        other => panic!("not a pcap file (magic {other:#x})"),
    };
    let u32_at = |at: usize| {
        let word: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
        if swapped {
            u32::from_be_bytes(word)
        } else {
            u32::from_le_bytes(word)
        }
    };
    assert_eq!(u32_at(20), 1, "link type is not Ethernet");
    let mut records = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let (seconds, fraction, length) = (u32_at(at), u32_at(at + 4), u32_at(at + 8) as usize);
        let start = at + 16;
        let Some(frame) = bytes.get(start..start + length) else {
            break; // a record cut short by the stop
        };
        records.push(Captured {
            at: UNIX_EPOCH
                + Duration::from_secs(seconds.into())
                + Duration::from_nanos(u64::from(fraction) * nanos_per_unit),
            frame: frame.to_vec(),
        });
        at = start + length;
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_reader_reads_both_resolutions() {
        let mut file = Vec::new();
        for word in [0xa1b2_3c4du32, 0x0004_0002, 0, 0, 65535, 1] {
            file.extend_from_slice(&word.to_le_bytes());
        }
        for word in [10u32, 500, 3, 3] {
            file.extend_from_slice(&word.to_le_bytes());
        }
        file.extend_from_slice(&[1, 2, 3]);
        let records = read_pcap(&file);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].frame, [1, 2, 3]);
        assert_eq!(
            records[0].at,
            UNIX_EPOCH + Duration::from_secs(10) + Duration::from_nanos(500)
        );
    }
}
