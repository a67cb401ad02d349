//! `kube-standin`: the stand-in API server as a process, for running by hand
//! or from other programs. Prints `READY <url>` once it serves, then serves
//! until SIGTERM or SIGINT.

use std::{fs, net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::Parser;
use kube_standin::{Options, Server};

#[derive(Parser)]
#[command(about = "A stand-in Kubernetes API server for tests")]
struct Args {
    /// Address to serve on (port 0: a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Multi-document YAML of objects to preload (repeatable).
    #[arg(long)]
    load: Vec<PathBuf>,
    /// Serve HTTPS; the CA (ca.crt) and a kubeconfig for the server are
    /// written into this directory.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Require this bearer token.
    #[arg(long)]
    token: Option<String>,
}

fn kubeconfig(url: &str, ca: Option<&PathBuf>, token: Option<&str>) -> String {
    let ca = ca
        .map(|path| format!("    certificate-authority: {}\n", path.display()))
        .unwrap_or_default();
    let user = token
        .map(|token| format!("    token: {token}\n"))
        .unwrap_or_else(|| "    {}\n".to_owned());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {url}\n{ca}\
         contexts:\n- name: standin\n  context:\n    cluster: standin\n    user: standin\n\
         current-context: standin\nusers:\n- name: standin\n  user:\n{user}"
    )
}

fn run(args: Args) -> Result<(), String> {
    let options = Options {
        listen: args.listen,
        tls: args.tls_dir.is_some(),
        token: args.token.clone(),
        preload: args.load,
        ..Options::default()
    };
    let server = Server::start(options).map_err(|e| e.to_string())?;
    if let Some(dir) = &args.tls_dir {
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let ca = dir.join("ca.crt");
        let pem = server.ca_pem().unwrap_or_default();
        fs::write(&ca, pem).map_err(|e| format!("writing {}: {e}", ca.display()))?;
        let config = dir.join("kubeconfig");
        let text = kubeconfig(server.url(), Some(&ca), args.token.as_deref());
        fs::write(&config, text).map_err(|e| format!("writing {}: {e}", config.display()))?;
    }
    println!("READY {}", server.url());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("handling SIGTERM: {e}"))?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok::<_, String>(())
    })?;
    drop(server);
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-standin: {e}");
            ExitCode::FAILURE
        }
    }
}
