//! `cargo xtask fuzz dataplane [--frames N] [--seed S] [--json]`: differential
//! fuzzing of the XDP responder against the reference model; see
//! `speaker_tests::fuzz`. Exits non-zero on any disagreement.

use anyhow::{bail, Context, Result};
use speaker_tests::fuzz::{self, Config};

const USAGE: &str = "usage: fuzz_dataplane [--frames N] [--seed S] [--json]";

fn parse_args() -> Result<(Config, bool)> {
    let mut config = Config {
        frames: 100_000,
        seed: 1,
    };
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<u64> {
            let value = args
                .next()
                .with_context(|| format!("{name} needs a value; {USAGE}"))?;
            value
                .replace('_', "")
                .parse()
                .with_context(|| format!("{name} {value:?}: not a whole number; {USAGE}"))
        };
        match arg.as_str() {
            "--frames" => config.frames = number("--frames")?,
            "--seed" => config.seed = number("--seed")?,
            "--json" => json = true,
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    Ok((config, json))
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fuzz_dataplane: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let (config, json) = parse_args()?;
    let report = fuzz::run(config)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", fuzz::render(&report));
    }
    fuzz::verdict(&report)
}
