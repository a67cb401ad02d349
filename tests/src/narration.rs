//! Step-by-step output for the demos: numbered headings, the real command
//! lines with their output, and a check mark (or a recorded problem) for
//! every expectation.

use crate::lab::{speaker, CmdOutput};

#[derive(Default)]
pub struct Narrator {
    step: u32,
    problems: Vec<String>,
}

impl Narrator {
    pub fn heading(&mut self, title: &str) {
        self.step += 1;
        println!("\n==> {}. {title}", self.step);
    }

    /// A command line as a reader would type it (`speaker`, not its path).
    pub fn pretty(&self, command: &str) -> String {
        speaker::pretty(command)
    }

    pub fn show(&self, out: &CmdOutput) {
        println!("$ {}", self.pretty(&out.command));
        for line in out.stdout.lines().chain(out.stderr.lines()) {
            println!("{line}");
        }
        if out.timed_out {
            println!("(killed: it ran longer than allowed)");
        } else if !out.status.success() {
            println!(
                "(exit status {})",
                out.code().map_or("by signal".to_owned(), |c| c.to_string())
            );
        }
    }

    pub fn expect(&mut self, ok: bool, what: impl Into<String>) -> bool {
        let what = what.into();
        if ok {
            println!("   ok: {what}");
        } else {
            println!("   MISSING: {what}");
            self.problems.push(what);
        }
        ok
    }

    /// What was expected and did not happen.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}
