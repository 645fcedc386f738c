//! The deployment recipes in docs/deploy/: the systemd unit passes
//! `systemd-analyze verify` (where systemd's tools are installed) and holds
//! the settings docs/operations.md promises; the Dockerfile has the shape it
//! documents. (Docker cannot run on the machines these tests run on, so the
//! image is not built here.)

use std::path::Path;
use std::process::Command;

fn deploy_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_systemd_unit_has_the_limits_and_the_graceful_stop_it_documents() {
    let unit = deploy_file("corekv.service");
    for setting in [
        "LimitMEMLOCK=64M",
        "LimitNOFILE=65536",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=60",
        "User=corekv",
        "StateDirectory=corekv",
        "ExecStart=/usr/local/bin/corekv-server\n",
    ] {
        assert!(unit.contains(setting), "{setting} is missing");
    }
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        eprintln!("systemd-analyze is not installed: the unit is not verified here");
        return;
    }
    // verify checks that ExecStart's binary exists: point it at this build's.
    let unit = deploy_file("corekv.service").replace(
        "ExecStart=/usr/local/bin/corekv-server",
        &format!("ExecStart={}", env!("CARGO_BIN_EXE_corekv-server")),
    );
    let temp = tempfile::tempdir().expect("temp dir");
    let path = temp.path().join("corekv.service");
    std::fs::write(&path, unit).expect("write the unit");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains("corekv.service"),
        "warnings about the unit: {stderr}"
    );
}

#[test]
fn the_dockerfile_is_multi_stage_and_runs_unprivileged_with_a_data_volume() {
    let dockerfile = deploy_file("Dockerfile");
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert_eq!(stages, 2, "a build stage and a runtime stage");
    for line in [
        "FROM rust:1-bookworm AS build",
        "COPY --from=build ",
        "USER corekv",
        "VOLUME [\"/var/lib/corekv\"]",
        "COREKV_DATA_DIR=/var/lib/corekv",
        "STOPSIGNAL SIGTERM",
        "ENTRYPOINT [\"corekv-server\"]",
        "--security-opt seccomp=",
        "--ulimit memlock=",
    ] {
        assert!(dockerfile.contains(line), "{line} is missing");
    }
    let ignore = deploy_file("Dockerfile.dockerignore");
    assert!(ignore.lines().any(|l| l == "target"));
}
