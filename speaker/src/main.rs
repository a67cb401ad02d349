//! `speaker`: parses the command line and dispatches; the work is in the
//! library.

use std::process::ExitCode;

use clap::Parser as _;
use speaker::{
    cli::{Cli, Command, VipAction, XdpAction},
    cluster,
    daemon::{self, config::RunConfig},
    dataplane::{operator, DataplaneMaps, PinDir},
    election::Membership,
    report::MapsReport,
    Error,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // One line, like every other error: clap's first line names the problem.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!("speaker: {first}");
            return ExitCode::FAILURE;
        }
    };
    speaker::logging::init(cli.log_level, cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line even when a source error spans several (regex, YAML).
            let text = e.to_string();
            let parts: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("speaker: error: {}", parts.join("; "));
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Xdp { action, pins } => {
            let pins = PinDir::new(pins.pin_dir);
            match action {
                XdpAction::Attach {
                    interface,
                    mode,
                    pass_through,
                } => println!(
                    "{}",
                    operator::attach_program(&pins, &interface, mode.into(), pass_through)?
                ),
                XdpAction::Detach { interface } => {
                    println!("{}", operator::detach_program(&pins, &interface)?)
                }
            }
        }
        Command::Vip { action, pins } => {
            let pins = PinDir::new(pins.pin_dir);
            let line = match action {
                VipAction::Add {
                    address,
                    interface,
                    vlan,
                } => operator::add_vip(&pins, address, &interface, vlan.path())?,
                VipAction::Del {
                    address,
                    interface,
                    vlan,
                } => operator::remove_vip(&pins, address, &interface, vlan.path())?,
            };
            println!("{line}");
        }
        Command::Heartbeat { max_age, pins } => {
            DataplaneMaps::from_pins(&PinDir::new(pins.pin_dir))?.heartbeat(max_age)?;
        }
        Command::Run(args) => daemon::run::start(RunConfig::try_from(*args)?)?,
        Command::Election {
            cluster_state,
            json,
            members,
            election,
        } => {
            let state = cluster::load(&cluster_state).map_err(Error::cluster)?;
            let membership = match members {
                // `--members ""` gives one empty name: nobody is alive.
                Some(names) => {
                    Membership::Members(names.into_iter().filter(|n| !n.is_empty()).collect())
                }
                None => Membership::Disabled,
            };
            let report = cluster::dry_run(&state, election.options(), &membership);
            print_report(&report, json, || report.to_table());
        }
        Command::Maps { json, pins } => {
            let pins = PinDir::new(pins.pin_dir);
            let maps = DataplaneMaps::from_pins(&pins)?;
            let report = MapsReport::read(&pins, &maps)?;
            print_report(&report, json, || report.to_table());
        }
    }
    Ok(())
}

/// Reports print as JSON for scripts or as a table for people.
fn print_report(report: &impl serde::Serialize, json: bool, table: impl FnOnce() -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).expect("plain data")
        );
    } else {
        print!("{}", table());
    }
}
