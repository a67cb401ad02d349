//! Embeds the eBPF object built by `cargo xtask build-ebpf`.
//!
//! The object is not built from here: it needs the nightly toolchain and
//! bpf-linker, which `cargo xtask build-ebpf` installs and drives. This script
//! only copies it into OUT_DIR, and refuses to go on when it is missing or
//! older than the eBPF sources, so a stale object is never embedded silently.
//! `SPEAKER_EBPF_PLACEHOLDER=1` embeds an empty object instead (for `cargo
//! check`/`clippy` without the eBPF toolchain); loading then fails clearly.

use std::{
    env, fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = fs::metadata(path).ok()?;
    if meta.is_file() {
        return meta.modified().ok();
    }
    fs::read_dir(path)
        .ok()?
        .filter_map(|entry| newest_mtime(&entry.ok()?.path()))
        .max()
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest.parent().unwrap().to_path_buf();
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_relative() {
                workspace.join(dir)
            } else {
                dir
            }
        })
        .unwrap_or_else(|| workspace.join("target"));
    let object = target_dir.join("bpfel-unknown-none/release/speaker-ebpf");
    let sources = [
        workspace.join("speaker-ebpf/src"),
        workspace.join("speaker-ebpf/Cargo.toml"),
        workspace.join("speaker-ebpf/common/src"),
    ];
    println!("cargo:rerun-if-env-changed=SPEAKER_EBPF_PLACEHOLDER");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    println!("cargo:rerun-if-changed={}", object.display());
    for source in &sources {
        println!("cargo:rerun-if-changed={}", source.display());
    }
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("speaker-ebpf.o");
    if env::var_os("SPEAKER_EBPF_PLACEHOLDER").is_some() {
        fs::write(&out, []).unwrap();
        return;
    }
    let Some(built) = newest_mtime(&object) else {
        panic!(
            "the eBPF object {} is missing: run `cargo xtask build-ebpf` first \
             (or set SPEAKER_EBPF_PLACEHOLDER=1 to build without it)",
            object.display()
        );
    };
    let changed = sources.iter().filter_map(|s| newest_mtime(s)).max();
    if changed.is_some_and(|changed| changed > built) {
        panic!(
            "the eBPF object {} is older than the sources in speaker-ebpf/: \
             run `cargo xtask build-ebpf` to rebuild it",
            object.display()
        );
    }
    fs::copy(&object, &out).unwrap();
}
