//! Project tasks: `cargo xtask <task>`. Each task installs what it is missing
//! (the Debian packages of `tools.toml`, the nightly's rust-src, bpf-linker) and says what it is doing,
//! so a fresh machine needs nothing else.

mod ebpf;
mod image;
mod lint;
mod run;
mod tools;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the XDP object (installing the eBPF toolchain pieces if missing).
    BuildEbpf,
    /// Install the test tools, build everything and run the whole test suite.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cargo_args: Vec<String>,
    },
    /// The lab demo: XDP answering arping/ndisc6/ping in network namespaces.
    Demo,
    /// Benchmarks that print their figures and ratios.
    Bench {
        #[arg(value_enum)]
        what: Bench,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Trials per scenario (failover only; default 20).
        #[arg(long)]
        trials: Option<usize>,
        /// One gossip profile instead of both (failover only).
        #[arg(long, value_parser = ["lan", "fast"])]
        profile: Option<String>,
        /// How the rolling restart stops each speaker (failover only;
        /// default: `restart`).
        #[arg(long, value_parser = ["restart", "keep", "handover", "default"])]
        restart_stop_mode: Option<String>,
        /// Only this scenario (failover only): kill, graceful_stop,
        /// owner_sigstop_1s, non_owner_sigstop_2s, loss_10_percent_30s,
        /// rolling_restart.
        #[arg(long)]
        scenario: Option<String>,
    },
    /// Differential fuzzing: random and mutated frames through the real
    /// program (BPF_PROG_TEST_RUN) against a reference model; fails on any
    /// disagreement.
    Fuzz {
        #[arg(value_enum)]
        what: Fuzz,
        /// Frames to run.
        #[arg(long, default_value_t = 100_000)]
        frames: u64,
        /// Generator seed: the same seed gives the same frames.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// cargo fmt --check and clippy for both halves of the workspace.
    Lint,
    /// The speaker's container image (FROM scratch, static binary), tagged as
    /// the Helm chart's default image and saved as
    /// target/image/xdp-speaker-<appVersion>.oci.tar.
    Image,
}

#[derive(Clone, Copy, ValueEnum)]
enum Bench {
    /// Per-packet cost of the XDP responder (BPF_PROG_TEST_RUN).
    Dataplane,
    /// Election and map sync at 10,000 services x 1,000 nodes.
    Election,
    /// Failover, stalls, loss and restarts in a three-node namespace lab, per
    /// gossip profile; gossip bandwidth.
    Failover,
}

#[derive(Clone, Copy, ValueEnum)]
enum Fuzz {
    /// The XDP responder against the model in `tests/src/fuzz/`.
    Dataplane,
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse().task) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    match task {
        Task::BuildEbpf => ebpf::build(),
        Task::Image => image::build(),
        Task::Test { cargo_args } => {
            tools::ensure(&[tools::Purpose::Test, tools::Purpose::Image])?;
            // The image and chart-pod labs run the image this builds (it
            // builds the XDP object first).
            image::build()?;
            run::step("building the speaker binary the lab tests drive")?;
            run::cargo(&["build", "-p", "speaker"])?;
            let mut args = vec!["test".to_owned(), "--no-fail-fast".to_owned()];
            args.extend(cargo_args);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run::step("running the test suite")?;
            let rust = run::cargo_test(&args)?;
            run::step("running the Helm chart tests")?;
            let chart = run::chart_test()?;
            let (passed, failed) = (rust.passed + chart.passed, rust.failed + chart.failed);
            println!("tests: {passed} passed, {failed} failed");
            if failed > 0 {
                anyhow::bail!("{failed} test(s) failed");
            }
            Ok(())
        }
        Task::Demo => {
            tools::ensure(&[tools::Purpose::Test])?;
            ebpf::build()?;
            run::cargo(&["build", "-p", "speaker"])?;
            run::cargo(&["run", "--quiet", "-p", "speaker-tests", "--bin", "lab_demo"])?;
            run::cargo(&[
                "run",
                "--quiet",
                "-p",
                "speaker-tests",
                "--bin",
                "election_demo",
            ])
        }
        Task::Bench {
            what,
            json,
            trials,
            profile,
            restart_stop_mode,
            scenario,
        } => {
            tools::ensure(&[tools::Purpose::Test])?;
            ebpf::build()?;
            let bin = match what {
                Bench::Dataplane => "bench_dataplane",
                Bench::Election => "bench_election",
                Bench::Failover => "bench_failover",
            };
            let mut args: Vec<String> = ["run", "--quiet", "--release", "-p", "speaker-tests"]
                .iter()
                .map(|a| a.to_string())
                .collect();
            args.extend(["--bin".to_owned(), bin.to_owned(), "--".to_owned()]);
            if json {
                args.push("--json".to_owned());
            }
            let failover_only = [
                ("--trials", trials.map(|n| n.to_string())),
                ("--profile", profile),
                ("--restart-stop-mode", restart_stop_mode),
                ("--scenario", scenario),
            ];
            for (flag, value) in failover_only {
                if let Some(value) = value {
                    if !matches!(what, Bench::Failover) {
                        anyhow::bail!("{flag} is an option of `bench failover` only");
                    }
                    args.extend([flag.to_owned(), value]);
                }
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run::cargo(&args)
        }
        Task::Fuzz {
            what: Fuzz::Dataplane,
            frames,
            seed,
            json,
        } => {
            ebpf::build()?;
            let (frames, seed) = (frames.to_string(), seed.to_string());
            let mut args = vec![
                "run",
                "--quiet",
                "--release",
                "-p",
                "speaker-tests",
                "--bin",
                "fuzz_dataplane",
                "--",
                "--frames",
                &frames,
                "--seed",
                &seed,
            ];
            if json {
                args.push("--json");
            }
            run::cargo(&args)
        }
        Task::Lint => {
            run::step("checking the tracked tree (no shared-folder references, every spawned program in tools.toml)")?;
            lint::check_tree()?;
            ebpf::build()?;
            run::cargo(&["fmt", "--all", "--", "--check"])?;
            run::cargo(&[
                "clippy",
                "--workspace",
                "--exclude",
                "speaker-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            ebpf::clippy()
        }
    }
}
