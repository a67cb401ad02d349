//! ARP pings with the installed `arping` (either Debian package) and what
//! they print.

use std::{
    os::unix::process::ExitStatusExt,
    process::ExitStatus,
    sync::OnceLock,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use super::{
    command::{run, Background, CmdOutput, Spawn},
    mac,
};

/// Which `arping` is installed: their options and output differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpingFlavor {
    /// iputils-arping: `-I IF`, `-i INTERVAL`, `-w DEADLINE`.
    Iputils,
    /// Thomas Habets' arping (Debian package `arping`): `-i IF`, `-W INTERVAL`, `-w TIMEOUT`.
    Habets,
}

/// Detects the installed arping (once per process).
pub fn arping_flavor() -> ArpingFlavor {
    static FLAVOR: OnceLock<ArpingFlavor> = OnceLock::new();
    *FLAVOR.get_or_init(|| {
        let version = run("arping", &["-V"], Duration::from_secs(10));
        if format!("{}{}", version.stdout, version.stderr).contains("iputils") {
            return ArpingFlavor::Iputils;
        }
        let help = run("arping", &["--help"], Duration::from_secs(10));
        let text = format!("{}{}", help.stdout, help.stderr);
        if text.contains("Habets") || text.contains("ARPing") {
            return ArpingFlavor::Habets;
        }
        panic!("unknown arping implementation:\n{version}\n{help}")
    })
}

/// An ARP ping: `count` requests, `interval` apart, giving up after `deadline`.
#[derive(Clone, Debug)]
pub struct Arping {
    pub target: String,
    pub interface: String,
    pub count: u32,
    /// Seconds between requests; `None`: the tool's default (1 s).
    pub interval: Option<f64>,
    /// Seconds after which arping exits whatever happened.
    pub deadline: u32,
}

impl Arping {
    pub fn new(target: &str, interface: &str, count: u32) -> Self {
        Arping {
            target: target.to_owned(),
            interface: interface.to_owned(),
            count,
            interval: None,
            deadline: count + 2,
        }
    }

    pub fn interval(mut self, seconds: f64) -> Self {
        self.interval = Some(seconds);
        self
    }

    pub fn deadline(mut self, seconds: u32) -> Self {
        self.deadline = seconds;
        self
    }

    /// True when the installed arping cannot send at this interval in one
    /// process: iputils-arping (20221126) takes whole seconds only. The lab
    /// then runs `count` one-request arpings, `interval` apart (a series).
    pub fn needs_series(&self) -> bool {
        arping_flavor() == ArpingFlavor::Iputils && self.interval.is_some_and(|i| i.fract() != 0.0)
    }

    /// One request of a series: `-c 1`, answered within a second.
    pub fn single(&self) -> Arping {
        Arping {
            count: 1,
            interval: None,
            deadline: 1,
            ..self.clone()
        }
    }

    /// The command line for the installed arping (one process; see
    /// [`Arping::needs_series`]).
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["-c".to_owned(), self.count.to_string()];
        args.extend(["-w".to_owned(), self.deadline.to_string()]);
        match arping_flavor() {
            ArpingFlavor::Iputils => {
                if let Some(i) = self.interval {
                    args.extend(["-i".to_owned(), (i.round().max(1.0) as u64).to_string()]);
                }
                args.extend(["-I".to_owned(), self.interface.clone()]);
            }
            ArpingFlavor::Habets => {
                if let Some(i) = self.interval {
                    args.extend(["-W".to_owned(), i.to_string()]);
                }
                args.extend(["-i".to_owned(), self.interface.clone()]);
            }
        }
        args.push(self.target.clone());
        args
    }

    /// How long one process may run before it is killed.
    fn limit(&self) -> Duration {
        Duration::from_secs(u64::from(self.deadline) + 30)
    }

    /// Runs it in one process in namespace `ns` (a fractional interval is
    /// rounded for iputils-arping); `broadcast`: every request broadcast
    /// (iputils-arping otherwise unicasts its requests to the first MAC that
    /// replied, so a second responder would see only the first request;
    /// Habets' arping broadcasts by default).
    pub fn run_in(&self, ns: &str, broadcast: bool) -> (CmdOutput, ArpingReport) {
        let mut args = self.args();
        if broadcast && arping_flavor() == ArpingFlavor::Iputils {
            args.insert(0, "-b".to_owned());
        }
        let out = Spawn::tool("arping")
            .in_netns(ns)
            .args(&args)
            .run(self.limit());
        let report = parse_arping(&out.stdout);
        (out, report)
    }

    /// Starts it in namespace `ns` in the background: one process, or a
    /// series of one-request processes when the installed arping cannot do
    /// the interval (see [`Arping::needs_series`]).
    pub fn start_in(&self, ns: &str) -> ArpingRun {
        if !self.needs_series() {
            let process = Spawn::tool("arping")
                .in_netns(ns)
                .args(self.args())
                .background();
            return ArpingRun::Process(process, self.limit());
        }
        let single = self.single().args();
        let ns = ns.to_owned();
        let interval = Duration::from_secs_f64(self.interval.unwrap_or(1.0));
        let count = self.count;
        let handle = thread::spawn(move || {
            let started = Instant::now();
            let mut outputs = Vec::new();
            let spawn = || Spawn::tool("arping").in_netns(&ns).args(&single);
            let command = spawn().display();
            for i in 0..count {
                let at = started + interval * i;
                if let Some(wait) = at.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
                outputs.push(spawn().run(Duration::from_secs(30)));
            }
            let command = format!(
                "{count} x [{command}], {:.1} s apart",
                interval.as_secs_f64()
            );
            merge_series(command, outputs, started.elapsed())
        });
        ArpingRun::Series(handle)
    }
}

/// An arping started with [`Arping::start_in`].
pub enum ArpingRun {
    Process(Background, Duration),
    Series(JoinHandle<(CmdOutput, ArpingReport)>),
}

impl ArpingRun {
    /// Waits for it to end; its output (merged for a series) and report.
    pub fn wait(self) -> (CmdOutput, ArpingReport) {
        match self {
            ArpingRun::Process(background, limit) => {
                let out = background.wait(limit);
                let report = parse_arping(&out.stdout);
                (out, report)
            }
            ArpingRun::Series(handle) => handle.join().expect("the arping series panicked"),
        }
    }
}

fn merge_series(
    command: String,
    outputs: Vec<CmdOutput>,
    elapsed: Duration,
) -> (CmdOutput, ArpingReport) {
    let mut report = ArpingReport {
        sent: Some(0),
        received: Some(0),
        ..Default::default()
    };
    for out in &outputs {
        let one = parse_arping(&out.stdout);
        report.replies.extend(one.replies);
        report.sent = report.sent.zip(one.sent).map(|(a, b)| a + b);
        report.received = report.received.zip(one.received).map(|(a, b)| a + b);
    }
    let failed = outputs.iter().find(|o| !o.success());
    let status = failed
        .or(outputs.last())
        .map(|o| o.status)
        .unwrap_or_else(|| ExitStatus::from_raw(0));
    let join = |f: fn(&CmdOutput) -> &str| outputs.iter().map(f).collect::<Vec<_>>().concat();
    let out = CmdOutput {
        command,
        status,
        stdout: join(|o| &o.stdout),
        stderr: join(|o| &o.stderr),
        timed_out: outputs.iter().any(|o| o.timed_out),
        elapsed,
    };
    (out, report)
}

/// One reply as arping printed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArpReply {
    pub ip: String,
    /// Lower case, colon separated.
    pub mac: String,
}

/// What arping reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArpingReport {
    pub replies: Vec<ArpReply>,
    /// Requests sent, from the summary line.
    pub sent: Option<u32>,
    /// Replies received, from the summary line.
    pub received: Option<u32>,
}

impl ArpingReport {
    pub fn macs(&self) -> Vec<&str> {
        self.replies.iter().map(|r| r.mac.as_str()).collect()
    }
}

fn number_before(line: &str, word: &str) -> Option<u32> {
    let words: Vec<_> = line.split_whitespace().collect();
    let at = words.iter().position(|w| w.starts_with(word))?;
    words.get(at.checked_sub(1)?)?.parse().ok()
}

/// The number following `word` in `line`.
pub(crate) fn number_after(line: &str, word: &str) -> Option<u32> {
    let words: Vec<_> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == word)?;
    words.get(at + 1)?.parse().ok()
}

/// Parses the output of either arping package.
///
/// iputils: `Unicast reply from 192.0.2.100 [AA:BB:CC:DD:EE:FF]  0.512ms`,
/// `Sent 3 probes (1 broadcast(s))`, `Received 3 response(s)`.
/// Habets: `60 bytes from aa:bb:cc:dd:ee:ff (192.0.2.100): index=0 time=...`,
/// `3 packets transmitted, 3 packets received,   0% unanswered (0 extra)`.
pub fn parse_arping(output: &str) -> ArpingReport {
    let mut report = ArpingReport::default();
    for line in output.lines() {
        let line = line.trim();
        if let Some(rest) = line.split_once(" reply from ").map(|(_, r)| r) {
            // iputils: "<ip> [<MAC>] ..."
            let ip = rest.split_whitespace().next().unwrap_or_default();
            let text = rest
                .split_once('[')
                .and_then(|(_, r)| r.split_once(']'))
                .map(|(m, _)| m);
            if let Some(text) = text.filter(|m| mac::is_mac(m)) {
                report.replies.push(ArpReply {
                    ip: ip.to_owned(),
                    mac: mac::normalize(text),
                });
            }
        } else if line.contains(" bytes from ") {
            // Habets: "60 bytes from <mac> (<ip>): index=..."
            let rest = line
                .split_once(" bytes from ")
                .map(|(_, r)| r)
                .unwrap_or_default();
            let mut words = rest.split_whitespace();
            let text = words.next().unwrap_or_default();
            let ip = words.next().unwrap_or_default().trim_start_matches('(');
            let ip = ip.split(')').next().unwrap_or_default();
            if mac::is_mac(text) {
                report.replies.push(ArpReply {
                    ip: ip.to_owned(),
                    mac: mac::normalize(text),
                });
            }
        } else if line.starts_with("Sent ") && line.contains("probe") {
            report.sent = number_after(line, "Sent");
        } else if line.starts_with("Received ") && line.contains("response") {
            report.received = number_after(line, "Received");
        } else if line.contains("packets transmitted") {
            report.sent = number_before(line, "packets");
            report.received = line
                .split(',')
                .find(|part| part.contains("received"))
                .and_then(|part| number_before(part, "packets"));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iputils_arping() {
        let out = "ARPING 192.0.2.100 from 192.0.2.10 xc1_0\n\
                   Unicast reply from 192.0.2.100 [6A:0B:1C:2D:3E:4F]  0.611ms\n\
                   Unicast reply from 192.0.2.100 [6A:0B:1C:2D:3E:4F]  0.540ms\n\
                   Sent 2 probes (1 broadcast(s))\n\
                   Received 2 response(s)\n";
        let r = parse_arping(out);
        assert_eq!(r.macs(), ["6a:0b:1c:2d:3e:4f", "6a:0b:1c:2d:3e:4f"]);
        assert_eq!(r.replies[0].ip, "192.0.2.100");
        assert_eq!((r.sent, r.received), (Some(2), Some(2)));
    }

    #[test]
    fn parses_iputils_arping_without_replies() {
        let out = "ARPING 192.0.2.101 from 192.0.2.10 xc1_0\nSent 3 probes (3 broadcast(s))\nReceived 0 response(s)\n";
        let r = parse_arping(out);
        assert!(r.replies.is_empty());
        assert_eq!((r.sent, r.received), (Some(3), Some(0)));
    }

    #[test]
    fn parses_habets_arping() {
        let out = "ARPING 192.0.2.100\n\
                   60 bytes from 6a:0b:1c:2d:3e:4f (192.0.2.100): index=0 time=1.234 usec\n\
                   60 bytes from 6a:b:1c:2d:3e:4f (192.0.2.100): index=1 time=1.100 usec\n\
                   Timeout\n\
                   \n\
                   --- 192.0.2.100 statistics ---\n\
                   3 packets transmitted, 2 packets received,  33% unanswered (0 extra)\n";
        let r = parse_arping(out);
        assert_eq!(r.macs(), ["6a:0b:1c:2d:3e:4f", "6a:0b:1c:2d:3e:4f"]);
        assert_eq!(r.replies[1].ip, "192.0.2.100");
        assert_eq!((r.sent, r.received), (Some(3), Some(2)));
    }
}
