//! The `docker` CLI, wrapped: every fault the harness injects is one of these calls, and a
//! failing call is an error (a fault that could not be injected fails the scenario).

use std::process::Command;

#[derive(Debug, thiserror::Error)]
#[error("docker {args}: {message}")]
pub struct DockerError {
    pub args: String,
    pub message: String,
}

/// The segment network, the etcd network and the catalog network of `docker-compose.yml`.
pub const SEGNET: &str = "ftsdchaos_segnet";
pub const ETCDNET: &str = "ftsdchaos_etcdnet";
pub const CATNET: &str = "ftsdchaos_catnet";

/// Runs `docker ARGS`, returning stdout; a non-zero exit is an error carrying stderr.
pub fn docker(args: &[&str]) -> Result<String, DockerError> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| DockerError {
            args: args.join(" "),
            message: format!("cannot run docker: {e}"),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(DockerError {
            args: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

pub fn kill(container: &str) -> Result<(), DockerError> {
    docker(&["kill", "-s", "KILL", container]).map(drop)
}

pub fn start(container: &str) -> Result<(), DockerError> {
    docker(&["start", container]).map(drop)
}

/// `docker stop` with a grace of `secs` before SIGKILL.
pub fn stop(container: &str, secs: u32) -> Result<(), DockerError> {
    docker(&["stop", "-t", &secs.to_string(), container]).map(drop)
}

pub fn pause(container: &str) -> Result<(), DockerError> {
    docker(&["pause", container]).map(drop)
}

pub fn unpause(container: &str) -> Result<(), DockerError> {
    docker(&["unpause", container]).map(drop)
}

pub fn disconnect(network: &str, container: &str) -> Result<(), DockerError> {
    docker(&["network", "disconnect", network, container]).map(drop)
}

/// Reconnects with the container's fixed address, so peers find it where they expect it.
pub fn connect(network: &str, container: &str, ip: &str) -> Result<(), DockerError> {
    docker(&["network", "connect", "--ip", ip, network, container]).map(drop)
}

pub fn exec(container: &str, cmd: &[&str]) -> Result<String, DockerError> {
    let mut args = vec!["exec", container];
    args.extend_from_slice(cmd);
    docker(&args)
}

/// `running`, `paused`, `exited`, ... (`State.Status`).
pub fn state(container: &str) -> Result<String, DockerError> {
    docker(&["inspect", "-f", "{{.State.Status}}", container]).map(|s| s.trim().to_string())
}

/// Names of the networks the container is attached to.
pub fn networks(container: &str) -> Result<Vec<String>, DockerError> {
    docker(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        container,
    ])
    .map(|s| s.split_whitespace().map(str::to_string).collect())
}
