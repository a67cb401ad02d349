//! Building the XDP object: nightly + rust-src + bpf-linker linked against the
//! nightly's own LLVM: newer bpf-linker releases default to an LLVM the
//! nightly does not ship, and the object must be linked by the same LLVM that
//! compiled it.

use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::run;

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_FEATURE: &str = "llvm-22";

/// RUSTFLAGS for the eBPF crate: abort on panic (no unwinding in BPF), and
/// debug info turned into BTF so `bpftool map dump` prints field names.
const EBPF_RUSTFLAGS: [&str; 3] = ["-Cpanic=abort", "-Cdebuginfo=2", "-Clink-arg=--btf"];

/// Variables the outer (stable) cargo sets that must not leak into the nightly build.
const OUTER_ENV: [&str; 6] = [
    "RUSTUP_TOOLCHAIN",
    "RUSTC",
    "RUSTDOC",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO",
];

fn nightly(args: &[&str]) -> Command {
    let mut command = Command::new("rustup");
    command.args(["run", "nightly"]).args(args);
    for var in OUTER_ENV {
        command.env_remove(var);
    }
    command
}

fn ensure_nightly() -> Result<()> {
    if run::output(&mut nightly(&["rustc", "--version"])).is_none() {
        bail!("the nightly toolchain is missing (`rustup toolchain install nightly`)");
    }
    let installed = run::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        run::step("adding rust-src to the nightly toolchain (needed for -Z build-std)")?;
        run::status(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

fn home() -> PathBuf {
    PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into()))
}

fn bpf_linker_bin() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cargo"))
        .join("bin/bpf-linker")
}

/// bpf-linker must use the same LLVM as the nightly rustc. Its RUNPATH points
/// at a prefix outside target/ and /tmp, holding links to the nightly's libLLVM.
fn ensure_bpf_linker() -> Result<()> {
    let works = run::output(Command::new(bpf_linker_bin()).arg("--version"))
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    if works {
        return Ok(());
    }
    run::step(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM (about a minute)"
    ))?;
    let sysroot = run::output(&mut nightly(&["rustc", "--print", "sysroot"]))
        .context("asking the nightly for its sysroot")?;
    let llvm_libs = PathBuf::from(sysroot.trim()).join("lib");
    let prefix = home().join(".local/share/bpf-linker-llvm22");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)?;
    let mut main_lib = None;
    for entry in fs::read_dir(&llvm_libs)? {
        let path = entry?.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("libLLVM") {
            continue;
        }
        if name.starts_with("libLLVM.so.") {
            main_lib = Some(path.clone());
        }
        let link = prefix_lib.join(&name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&path, &link)?;
    }
    let Some(main_lib) = main_lib else {
        bail!("no libLLVM.so.* in {}", llvm_libs.display());
    };
    let link = prefix_lib.join("libLLVM.so");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(main_lib, link)?;
    let mut install = Command::new("cargo");
    install
        .args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
        ])
        .args(["--no-default-features", "--features", LLVM_FEATURE])
        .env("LLVM_PREFIX", &prefix);
    for var in OUTER_ENV {
        install.env_remove(var);
    }
    run::status(&mut install)
}

/// Builds speaker-ebpf into target/bpfel-unknown-none/release/speaker-ebpf,
/// where speaker's build.rs picks it up.
pub fn build() -> Result<()> {
    ensure_nightly()?;
    ensure_bpf_linker()?;
    run::step("building the XDP object (speaker-ebpf)")?;
    run::status(
        nightly(&["cargo", "build", "-p", "speaker-ebpf", "--release"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .env("CARGO_ENCODED_RUSTFLAGS", EBPF_RUSTFLAGS.join("\x1f"))
            .current_dir(run::workspace_root()),
    )
}

pub fn clippy() -> Result<()> {
    run::status(
        nightly(&["cargo", "clippy", "-p", "speaker-ebpf", "--release"])
            .args([
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ])
            .env("CARGO_ENCODED_RUSTFLAGS", EBPF_RUSTFLAGS.join("\x1f"))
            .current_dir(run::workspace_root()),
    )
}
