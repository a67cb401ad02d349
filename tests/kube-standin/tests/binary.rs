//! The `kube-standin` binary: `READY <url>`, and with `--tls-dir` a CA and a
//! kubeconfig that a kube-rs client can use as they are.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use k8s_openapi::api::core::v1::Node;
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    Api, Client, Config,
};

/// The server process, killed (by its own handle) on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_serves_what_its_kubeconfig_describes() {
    let dir = std::env::temp_dir().join(format!("kube-standin-binary-{}", std::process::id()));
    let cluster = dir.join("cluster.yaml");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        &cluster,
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-standin"))
        .arg("--load")
        .arg(&cluster)
        .arg("--tls-dir")
        .arg(&dir)
        .args(["--token", "binary-test"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line.strip_prefix("READY ").expect("a READY line").trim();
    assert!(url.starts_with("https://127.0.0.1:"), "{line}");

    let text = std::fs::read_to_string(dir.join("kubeconfig")).unwrap();
    let kubeconfig = Kubeconfig::from_yaml(&text).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(config.cluster_url.to_string().trim_end_matches('/'), url);
    let nodes: Api<Node> = Api::all(Client::try_from(config).unwrap());
    let names: Vec<_> = nodes
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(names, ["n1"]);
    drop(running);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_preload_is_one_line_on_stderr() {
    let output = Command::new(env!("CARGO_BIN_EXE_kube-standin"))
        .args(["--load", "/nonexistent/cluster.yaml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("kube-standin: reading /nonexistent/cluster.yaml"),
        "{stderr}"
    );
}
