//! `cargo xtask image`: the speaker's container image, built without a Docker
//! engine. A static (musl) `speaker` embedding the XDP object goes into a
//! `FROM scratch` image (see the Containerfile at the workspace root), which
//! podman tags as the Helm chart's default image (`speaker.image.repository`
//! from values.yaml, `localhost/xdp-speaker`, and the chart's appVersion) and
//! saves as an OCI archive that nodes or registries can import.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{ebpf, run, tools};

const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// Where the chart's appVersion (the image tag) is read from.
const CHART_YAML: &str = "charts/xdp-speaker/Chart.yaml";
/// Where the chart's default `speaker.image.repository` is read from.
const VALUES_YAML: &str = "charts/xdp-speaker/values.yaml";
/// The archive's file name stem: `<stem>-<version>.oci.tar`.
const ARCHIVE_STEM: &str = "xdp-speaker";

/// Global podman options every podman call here needs (see tools.toml's podman entry).
const PODMAN_GLOBAL: [&str; 3] = ["--runtime", "runc", "--cgroup-manager=cgroupfs"];

/// Installs the missing image tools: the tools.toml entries `for = "image"`
/// (podman; runc, since crun refuses this machine kind's hybrid cgroups;
/// musl-gcc, which the `cc` crate spawns to build ring for the musl target).
fn ensure_image_tools() -> Result<()> {
    tools::ensure(&[tools::Purpose::Image])
}

fn ensure_musl_target() -> Result<()> {
    let installed = run::output(Command::new("rustup").args(["target", "list", "--installed"]))
        .unwrap_or_default();
    if installed.lines().any(|line| line.trim() == MUSL_TARGET) {
        return Ok(());
    }
    run::step(&format!(
        "adding the {MUSL_TARGET} target (a static speaker for the image)"
    ))?;
    run::status(Command::new("rustup").args(["target", "add", MUSL_TARGET]))
}

#[derive(serde::Deserialize)]
struct ChartValues {
    speaker: SpeakerValues,
}

#[derive(serde::Deserialize)]
struct SpeakerValues {
    image: ImageValues,
}

#[derive(serde::Deserialize)]
struct ImageValues {
    repository: String,
}

/// The chart's default image repository: the image is tagged with it, so the
/// chart's default image is the one built here.
fn repository(root: &Path) -> Result<String> {
    let path = root.join(VALUES_YAML);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let values: ChartValues = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{}: no speaker.image.repository string", path.display()))?;
    let repository = values.speaker.image.repository.trim().to_owned();
    if repository.is_empty() || repository.contains(char::is_whitespace) {
        bail!(
            "{}: speaker.image.repository {repository:?} is not an image name",
            path.display()
        );
    }
    Ok(repository)
}

#[derive(serde::Deserialize)]
struct ChartMeta {
    #[serde(rename = "appVersion")]
    app_version: String,
}

/// The image tag: the chart's appVersion, which its templates use as the
/// default `speaker.image.tag`.
fn app_version(root: &Path) -> Result<String> {
    let path = root.join(CHART_YAML);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let meta: ChartMeta = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{}: no appVersion string", path.display()))?;
    let version = meta.app_version.trim().to_owned();
    // An OCI tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}.
    let valid_tag = version.len() <= 128
        && version.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !valid_tag {
        bail!(
            "{}: appVersion {version:?} is not a valid image tag",
            path.display()
        );
    }
    Ok(version)
}

/// Where `cargo xtask image` leaves the archive for `version`.
fn archive_path(root: &Path, version: &str) -> PathBuf {
    root.join(format!("target/image/{ARCHIVE_STEM}-{version}.oci.tar"))
}

fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args(PODMAN_GLOBAL);
    command
}

/// A release `speaker` for the musl target, stripped: static, so the image
/// needs no libc, and it embeds the XDP object `ebpf::build` just made.
fn build_static_speaker(root: &Path) -> Result<PathBuf> {
    run::step(&format!(
        "building a static, stripped speaker ({MUSL_TARGET}, release)"
    ))?;
    run::status(
        run::cargo_command()
            .args(["build", "--release", "-p", "speaker", "--bin", "speaker"])
            .args(["--target", MUSL_TARGET])
            .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
            .current_dir(root),
    )?;
    Ok(root.join(format!("target/{MUSL_TARGET}/release/speaker")))
}

pub fn build() -> Result<()> {
    let root = run::workspace_root();
    let version = app_version(&root)?;
    let repository = repository(&root)?;
    ensure_image_tools()?;
    ensure_musl_target()?;
    ebpf::build()?;
    let binary = build_static_speaker(&root)?;

    // Only the binary goes into the build context: podman would otherwise
    // send the whole workspace (target/ holds gigabytes).
    let image_dir = root.join("target/image");
    let context = image_dir.join("context");
    if context.exists() {
        fs::remove_dir_all(&context).with_context(|| format!("clearing {}", context.display()))?;
    }
    fs::create_dir_all(&context).with_context(|| format!("creating {}", context.display()))?;
    fs::copy(&binary, context.join("speaker"))
        .with_context(|| format!("copying {} into the build context", binary.display()))?;

    let tag = format!("{repository}:{version}");
    run::step(&format!("building the image {tag} (FROM scratch)"))?;
    run::status(
        podman()
            .arg("build")
            .arg("--file")
            .arg(root.join("Containerfile"))
            .args(["--build-arg", &format!("VERSION={version}")])
            .args(["--build-arg", &format!("SOURCE={}", source_url(&root))])
            .args(["--build-arg", &format!("REVISION={}", revision(&root))])
            .args(["--tag", &tag])
            .arg(&context),
    )?;

    let archive = archive_path(&root, &version);
    // podman save refuses to write over an existing archive.
    if archive.exists() {
        fs::remove_file(&archive).with_context(|| format!("removing {}", archive.display()))?;
    }
    run::step(&format!("saving {}", archive.display()))?;
    run::status(
        podman()
            .args(["save", "--format", "oci-archive", "--output"])
            .arg(&archive)
            .arg(&tag),
    )?;

    let image_size: u64 =
        run::output(podman().args(["image", "inspect", "--format", "{{.Size}}", &tag]))
            .context("podman image inspect failed")?
            .trim()
            .parse()
            .context("podman image inspect: size is not a number")?;
    let archive_size = fs::metadata(&archive)
        .with_context(|| format!("reading {}", archive.display()))?
        .len();
    println!(
        "image {tag}: {} (uncompressed), archive {} ({})",
        megabytes(image_size),
        archive.display(),
        megabytes(archive_size)
    );
    Ok(())
}

/// The org.opencontainers.image.source label: the clone's origin, when it has one.
fn source_url(root: &Path) -> String {
    run::output(
        Command::new("git")
            .args(["remote", "get-url", "origin"])
            .current_dir(root),
    )
    .map(|url| url.trim().to_owned())
    .filter(|url| !url.is_empty())
    .unwrap_or_else(|| "unpublished (the clone has no git remote origin)".to_owned())
}

/// The org.opencontainers.image.revision label: the commit built, marked when
/// the work tree had changes.
fn revision(root: &Path) -> String {
    let git = |args: &[&str]| run::output(Command::new("git").args(args).current_dir(root));
    let Some(commit) = git(&["rev-parse", "HEAD"]) else {
        return "unknown".to_owned();
    };
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|changes| !changes.trim().is_empty());
    format!("{}{}", commit.trim(), if dirty { "-dirty" } else { "" })
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake workspace holding only the chart's metadata, one per test.
    fn chart_dir(test: &str, chart_yaml: &str, values_yaml: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("xtask-image-{}-{test}", std::process::id()));
        let chart = root.join("charts/xdp-speaker");
        fs::create_dir_all(&chart).unwrap();
        fs::write(chart.join("Chart.yaml"), chart_yaml).unwrap();
        fs::write(chart.join("values.yaml"), values_yaml).unwrap();
        root
    }

    #[test]
    fn tag_from_the_chart() {
        let root = chart_dir(
            "tag",
            "apiVersion: v2\nname: xdp-speaker\nversion: 0.1.0\nappVersion: \"1.2.3-rc.1\"\n",
            "speaker:\n  image:\n    repository: localhost/xdp-speaker\n    tag: \"\"\n",
        );
        assert_eq!(app_version(&root).unwrap(), "1.2.3-rc.1");
        assert_eq!(repository(&root).unwrap(), "localhost/xdp-speaker");
        assert_eq!(
            archive_path(&root, "1.2.3-rc.1"),
            root.join("target/image/xdp-speaker-1.2.3-rc.1.oci.tar")
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn bad_chart_metadata_is_refused() {
        let root = chart_dir(
            "bad",
            "apiVersion: v2\nname: xdp-speaker\nappVersion: \"1.0 beta\"\n",
            "speaker: {}\n",
        );
        let error = app_version(&root).unwrap_err().to_string();
        assert!(error.contains("not a valid image tag"), "{error}");
        let error = format!("{:#}", repository(&root).unwrap_err());
        assert!(error.contains("speaker.image.repository"), "{error}");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_workspace_chart_names_the_image() {
        let root = run::workspace_root();
        assert!(!app_version(&root).unwrap().is_empty());
        assert!(repository(&root).unwrap().ends_with("xdp-speaker"));
    }
}
