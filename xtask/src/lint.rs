//! Checks of the tracked tree that keep a fresh clone working on a fresh
//! machine (run by `cargo xtask lint` before fmt and clippy):
//!
//! - no tracked file refers to the developers' shared folder beside the
//!   checkout: a clone of the repository alone must build and pass its tests;
//! - every program the code spawns is declared in `tools.toml`, which is what
//!   xtask installs. A previous landing passed CI only because the machine
//!   happened to have `tcpdump` from a manual install.
//!
//! Spawns are found in Rust (`Command::new("prog")`), shell scripts (the
//! first word of every simple command) and Python (`subprocess.*(["prog"`).
//! A `Command::new` whose program is not a literal is allowed only in the
//! [`SPAWN_POINTS`], each of which checks its program itself.

use std::{collections::BTreeSet, fs, path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::{run, tools};

/// Files that may spawn a program named by an expression, and why that is safe.
const SPAWN_POINTS: [(&str, &str); 3] = [
    (
        "xtask/src/run.rs",
        "spawns the cargo running xtask ($CARGO), a toolchain program",
    ),
    (
        "xtask/src/ebpf.rs",
        "runs the bpf-linker that xtask itself builds",
    ),
    (
        "tests/src/lab/command.rs",
        "the lab's one spawn function, which refuses programs missing from tools.toml at run time",
    ),
];

/// Shell words that are not programs: keywords, builtins, and the script's
/// own functions are added per file.
const SHELL_WORDS: [&str; 39] = [
    "if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac",
    "in", "function", "return", "exit", "set", "cd", "echo", "printf", "read", "local", "export",
    "source", ".", "test", "[", "[[", "]]", "true", "false", "shift", "trap", "wait", "eval",
    "unset", "declare", "{", "pwd",
];

pub fn check_tree() -> Result<()> {
    let registry: BTreeSet<String> = tools::registry()?
        .into_iter()
        .map(|tool| tool.command)
        .collect();
    let listed = run::output(
        Command::new("git")
            .args(["ls-files", "-z"])
            .current_dir(run::workspace_root()),
    )
    .context("listing tracked files with git")?;
    let mut problems = Vec::new();
    for file in listed.split('\0').filter(|f| !f.is_empty()) {
        let Ok(text) = fs::read_to_string(run::workspace_root().join(file)) else {
            continue; // not text
        };
        problems.extend(check_file(file, &text, &registry));
    }
    if problems.is_empty() {
        return Ok(());
    }
    for problem in &problems {
        eprintln!("lint: {problem}");
    }
    bail!(
        "{} problem(s) in the tracked tree (see above; programs go into tools.toml)",
        problems.len()
    )
}

/// The problems of one tracked file.
fn check_file(file: &str, text: &str, registry: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    // Spelled in two pieces so that this file does not match itself.
    let shared = concat!("..", "/shared");
    for (n, line) in text.lines().enumerate() {
        if line.contains(shared) {
            problems.push(format!(
                "{file}:{}: refers to {shared} (a clone of the repository alone must work)",
                n + 1
            ));
        }
    }
    let spawned = match Path::new(file).extension().and_then(|e| e.to_str()) {
        // This file holds the patterns it looks for as data.
        Some("rs") if file == "xtask/src/lint.rs" => Vec::new(),
        Some("rs") => rust_spawns(file, text, &mut problems),
        Some("sh") => shell_spawns(text),
        Some("py") => python_spawns(text),
        _ if file == ".ci/run" => shell_spawns(text),
        _ => Vec::new(),
    };
    for (line, program) in spawned {
        if !registry.contains(&program) {
            problems.push(format!(
                "{file}:{line}: spawns `{program}`, which tools.toml does not declare"
            ));
        }
    }
    problems
}

/// `(line, program)` of every `Command::new("program")`; a non-literal
/// program outside the spawn points is a problem.
fn rust_spawns(file: &str, text: &str, problems: &mut Vec<String>) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("Command::new(") {
            rest = &rest[at + "Command::new(".len()..];
            let argument = rest.trim_start();
            if let Some(literal) = argument.strip_prefix('"') {
                let program = literal.split('"').next().unwrap_or_default();
                found.push((n + 1, program.to_owned()));
            } else if argument.starts_with("env!(\"CARGO_BIN_EXE_") {
                // A binary of this workspace, built by cargo for the test.
            } else if !SPAWN_POINTS.iter().any(|(point, _)| *point == file) {
                problems.push(format!(
                    "{file}:{}: spawns a program named by an expression; spawn through the \
                     lab's command module (or name the program literally)",
                    n + 1
                ));
            }
        }
    }
    found
}

/// `(line, program)` of the first word of every simple command of a shell
/// script: the start of a line or after `|`, `;`, `&&`, `||`, `$(`, `(`.
fn shell_spawns(text: &str) -> Vec<(usize, String)> {
    let functions: BTreeSet<&str> = text
        .lines()
        .filter_map(|line| line.trim().strip_suffix("() {"))
        .map(str::trim)
        .collect();
    let mut found = Vec::new();
    let mut in_heredoc: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        if let Some(end) = &in_heredoc {
            if line.trim() == end {
                in_heredoc = None;
            }
            continue;
        }
        let code = strip_shell_comment(line);
        if let Some(at) = code.find("<<") {
            let end = code[at + 2..]
                .trim_start_matches('-')
                .trim()
                .trim_matches(|c| c == '\'' || c == '"');
            in_heredoc = Some(end.split_whitespace().next().unwrap_or_default().to_owned());
        }
        for segment in split_commands(code) {
            if let Some(program) = command_word(&segment) {
                if !functions.contains(program) && !SHELL_WORDS.contains(&program) {
                    found.push((n + 1, program.to_owned()));
                }
            }
        }
    }
    found
}

fn strip_shell_comment(line: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '#') if previous.is_whitespace() => return &line[..i],
            _ => {}
        }
        previous = c;
    }
    line
}

/// `code` with quoted literal text blanked out (so that words inside strings
/// are not taken for commands) but command substitutions kept, also inside
/// double quotes.
fn blank_quoted(code: &str) -> String {
    #[derive(Clone, Copy, PartialEq)]
    enum Context {
        Single,
        Double,
        /// `$(`…`)` or `(`…`)`: commands again.
        Nested,
    }
    let mut stack: Vec<Context> = Vec::new();
    let mut out = String::with_capacity(code.len());
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        let substitution = c == '$' && chars.peek() == Some(&'(');
        match stack.last() {
            Some(Context::Single) => {
                if c == '\'' {
                    stack.pop();
                }
                out.push('_');
            }
            Some(Context::Double) if substitution => {
                chars.next();
                stack.push(Context::Nested);
                out.push_str("$(");
            }
            Some(Context::Double) => {
                if c == '"' {
                    stack.pop();
                }
                out.push('_');
            }
            _ if substitution => {
                chars.next();
                stack.push(Context::Nested);
                out.push_str("$(");
            }
            _ => {
                match c {
                    '\'' => stack.push(Context::Single),
                    '"' => stack.push(Context::Double),
                    '(' => stack.push(Context::Nested),
                    ')' if stack.last() == Some(&Context::Nested) => {
                        stack.pop();
                    }
                    _ => {}
                }
                out.push(if matches!(c, '\'' | '"') { '_' } else { c });
            }
        }
    }
    out
}

fn split_commands(code: &str) -> Vec<String> {
    let mut segments = vec![blank_quoted(code)];
    for separator in ["$(", "&&", "||", "|", ";", "(", "`", ")"] {
        segments = segments
            .iter()
            .flat_map(|segment| segment.split(separator).map(str::to_owned))
            .collect();
    }
    segments
}

/// The program a simple command runs, skipping assignments and `exec`,
/// `timeout N`, `env`; `None` for words that are not programs (variables,
/// quoted words, paths, `command -v` look-ups).
fn command_word(segment: &str) -> Option<&str> {
    let mut words = segment.split_whitespace().peekable();
    loop {
        let word = *words.peek()?;
        let redirection = word.contains(['>', '<']);
        if word.contains('=') || redirection || word == "exec" || word == "env" || word == "!" {
            words.next();
        } else if word == "timeout" {
            words.next();
            words.next();
        } else {
            break;
        }
    }
    let word = words.next()?;
    let second = words.next();
    let not_a_program = word.starts_with(['$', '_', '/', '.', '-', '*', '}', '{'])
        || word == "command" && second == Some("-v");
    (!not_a_program).then_some(word)
}

/// `(line, program)` of `subprocess.<fn>(["program", …` calls.
fn python_spawns(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some(at) = line.find("subprocess.") else {
            continue;
        };
        let Some(open) = line[at..].find("([") else {
            continue;
        };
        let argument = line[at + open + 2..].trim_start();
        if let Some(literal) = argument.strip_prefix(['"', '\'']) {
            let program = literal.split(['"', '\'']).next().unwrap_or_default();
            found.push((n + 1, program.to_owned()));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(commands: &[&str]) -> BTreeSet<String> {
        commands.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn an_undeclared_rust_spawn_is_found() {
        let text =
            "let a = Command::new(\"ip\");\nlet b = Command::new(\"tcpdump\").arg(\"-n\");\n";
        let problems = check_file("tests/tests/x.rs", text, &registry(&["ip"]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("tests/tests/x.rs:2") && problems[0].contains("tcpdump"));
    }

    #[test]
    fn an_expression_spawn_is_allowed_only_at_spawn_points() {
        let text = "Command::new(program)\n";
        assert_eq!(
            check_file("tests/tests/x.rs", text, &registry(&[])).len(),
            1
        );
        assert!(check_file("tests/src/lab/command.rs", text, &registry(&[])).is_empty());
    }

    #[test]
    fn a_workspace_binary_is_allowed_in_tests() {
        let text = "Command::new(env!(\"CARGO_BIN_EXE_kube-standin\"))\n";
        assert!(check_file("tests/kube-standin/tests/binary.rs", text, &registry(&[])).is_empty());
    }

    #[test]
    fn a_reference_to_the_shared_folder_is_found() {
        let text = format!("see {}/toolchain.md\n", concat!("..", "/shared"));
        let problems = check_file("README.md", &text, &registry(&[]));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("README.md:1:"));
    }

    #[test]
    fn shell_commands_are_found_after_separators() {
        let script = "#!/bin/bash\nset -e\nf() {\n  echo hi\n}\nX=1 tcpdump -n | grep x && f\n\
                      if ! command -v ip >/dev/null; then exit 1; fi\nv=\"$(dirname \"$0\")\"\n\
                      cat <<EOF\nnotacommand here\nEOF\n\"$venv/bin/python\" -m pytest # cargo\n\
                      exec 9>\"$lock\"\nflock 9\n";
        let programs: Vec<String> = shell_spawns(script).into_iter().map(|(_, p)| p).collect();
        assert_eq!(programs, ["tcpdump", "grep", "dirname", "cat", "flock"]);
    }

    #[test]
    fn python_subprocess_calls_are_found() {
        let text = "import subprocess\nsubprocess.run([\"tcpdump\", \"-n\"])\nsubprocess.check_output(['ip', 'a'])\n";
        let programs: Vec<String> = python_spawns(text).into_iter().map(|(_, p)| p).collect();
        assert_eq!(programs, ["tcpdump", "ip"]);
    }

    /// The project's own tree passes: the check CI runs is the check tested here.
    #[test]
    fn the_tracked_tree_passes() {
        check_tree().unwrap();
    }
}
