//! Running commands with what is being done printed first.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn step(what: &str) -> Result<()> {
    eprintln!("xtask: {what}");
    Ok(())
}

/// Runs `command`, failing with its command line when it fails.
pub fn status(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// Runs `command` and returns its stdout, or None when it cannot run or fails.
pub fn output(command: &mut Command) -> Option<String> {
    let out = command.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A command of the stable cargo running this xtask, in the workspace root.
pub fn cargo_command() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root());
    command
}

/// Runs the stable cargo running this xtask with `args`, in the workspace root.
pub fn cargo(args: &[&str]) -> Result<()> {
    status(cargo_command().args(args))
}

/// Passed and failed counts of a test run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
}

/// Runs `command`, passing its stdout through line by line to `count`, which
/// adds what the runner's summary lines say; fails when the command fails.
fn counted(mut command: Command, count: impl Fn(&str, &mut Tally)) -> Result<Tally> {
    use std::io::{BufRead, BufReader};
    let shown = format!("{command:?}");
    let mut child = command
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let mut tally = Tally::default();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        count(&line, &mut tally);
    }
    let status = child.wait()?;
    if !status.success() {
        // Still report what ran: the caller prints the totals before failing.
        eprintln!("xtask: {shown} failed ({status})");
        tally.failed = tally.failed.max(1);
    }
    Ok(tally)
}

/// `cargo test`, totalling every test binary's `test result:` line.
pub fn cargo_test(args: &[&str]) -> Result<Tally> {
    let mut command = cargo_command();
    command.args(args);
    counted(command, |line, tally| {
        if let Some(rest) = line.strip_prefix("test result: ") {
            tally.passed += count_before(rest, " passed");
            tally.failed += count_before(rest, " failed");
        }
    })
}

/// The chart's pytest suite (`tests/chart/run.sh`), totalling pytest's summary.
pub fn chart_test() -> Result<Tally> {
    let mut command = Command::new("bash");
    command.arg("tests/chart/run.sh");
    counted(command, |line, tally| {
        // pytest's closing line: "== 90 passed, 1 failed in 2.5s ==" or "90 passed in 2.5s".
        if line.contains(" in ") && (line.contains(" passed") || line.contains(" failed")) {
            let text = line.trim_matches(|c: char| c == '=' || c.is_whitespace());
            tally.passed += count_before(text, " passed");
            tally.failed += count_before(text, " failed");
        }
    })
}

/// The number just before `label` in a summary line.
fn count_before(text: &str, label: &str) -> u64 {
    text.find(label)
        .and_then(|end| text[..end].rsplit([' ', '.', ',']).next()?.parse().ok())
        .unwrap_or(0)
}
