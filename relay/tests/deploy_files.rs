//! What can be checked of `deploy/` here: the example configs pass `check-config`, every
//! YAML file parses, the compose file names its services, the OHTTP overlay wires both
//! gateways and the OHTTP relay together, and the systemd unit passes
//! `systemd-analyze verify` (skipped visibly without systemd-analyze).

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

const BIN: &str = env!("CARGO_BIN_EXE_tidings-relay");

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn load_yaml(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn example_configs_pass_check_config() {
    for name in [
        "relay.embedded.toml",
        "relay.postgres.toml",
        "relay.compose.toml",
        "relay.ohttp.compose.toml",
    ] {
        let path = deploy().join(name);
        let mut cmd = Command::new(BIN);
        for key in ["LISTEN", "ADMIN_LISTEN", "DATA_DIR", "TLS_CERT", "TLS_KEY"] {
            cmd.env_remove(format!("TIDINGS_{key}"));
        }
        let out = cmd.arg("check-config").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if name.ends_with(".compose.toml") {
            // Their key files appear only inside the compose volumes; the rest must be fine.
            assert!(
                out.status.success() || stderr.contains("/mock-push/"),
                "{name}: {stderr}"
            );
        } else {
            assert!(out.status.success(), "{name}: {stderr}");
        }
    }
}

#[test]
fn every_yaml_file_parses_and_kubernetes_objects_are_complete() {
    let mut files = Vec::new();
    yaml_files(&deploy(), &mut files);
    assert!(files.len() >= 6, "{files:?}");
    let mut kinds = Vec::new();
    for file in files.iter().filter(|f| f.starts_with(deploy().join("k8s"))) {
        for doc in load_yaml(file) {
            assert!(doc["apiVersion"].as_str().is_some(), "{}", file.display());
            assert!(doc["metadata"]["name"].as_str().is_some(), "{}", file.display());
            kinds.push(doc["kind"].as_str().unwrap().to_owned());
        }
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Secret",
            "Service"
        ]
    );
    let deployment = load_yaml(&deploy().join("k8s/deployment.yaml")).remove(0);
    let relay = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        relay["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        relay["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(relay["readinessProbe"]["httpGet"]["port"].as_str(), Some("admin"));
}

#[test]
fn compose_names_its_services() {
    let compose = load_yaml(&deploy().join("compose.yaml")).remove(0);
    let services = compose["services"].as_hash().expect("services");
    for name in ["postgres", "relay-1", "relay-2", "mock-push"] {
        assert!(services.contains_key(&Yaml::String(name.to_owned())), "{name}");
    }
    // Both relays take the shared settings (through the `<<` merge key, which the parser
    // may leave as is).
    for relay in ["relay-1", "relay-2"] {
        let service = &compose["services"][relay];
        let shared = if service["depends_on"].is_badvalue() {
            &service["<<"]
        } else {
            service
        };
        assert!(shared["depends_on"]["postgres"].as_hash().is_some(), "{relay}");
        assert!(shared["depends_on"]["mock-push"].as_hash().is_some(), "{relay}");
    }
}

#[test]
fn the_ohttp_overlay_wires_the_gateways_to_the_ohttp_relay() {
    let compose = load_yaml(&deploy().join("compose.ohttp.yaml")).remove(0);
    let services = &compose["services"];
    for name in ["relay-1", "relay-2", "ohttp-relay", "ohttp-tls"] {
        assert!(!services[name].is_badvalue(), "{name}");
    }
    // Both relays run the OHTTP config, its gateway published on the host.
    let config = std::fs::read_to_string(deploy().join("relay.ohttp.compose.toml")).unwrap();
    let config: toml::Table = config.parse().unwrap();
    let ohttp = config["ohttp"].as_table().expect("[ohttp]");
    assert_eq!(ohttp["enabled"].as_bool(), Some(true));
    let listen = ohttp["listen"].as_str().expect("ohttp.listen");
    let port = listen.rsplit(':').next().unwrap();
    for (relay, host_port) in [("relay-1", "7402"), ("relay-2", "7412")] {
        let service = &services[relay];
        let volumes: Vec<&str> = service["volumes"]
            .as_vec()
            .expect("volumes")
            .iter()
            .filter_map(Yaml::as_str)
            .collect();
        assert!(
            volumes.contains(&"./relay.ohttp.compose.toml:/etc/tidings/relay.toml:ro"),
            "{relay}: {volumes:?}"
        );
        let ports: Vec<&str> = service["ports"]
            .as_vec()
            .expect("ports")
            .iter()
            .filter_map(Yaml::as_str)
            .collect();
        assert_eq!(ports, [format!("127.0.0.1:{host_port}:{port}")], "{relay}");
    }
    // The OHTTP relay is the published crate's image, forwarding to relay-1's gateway.
    let relay = &services["ohttp-relay"];
    assert_eq!(
        relay["build"]["dockerfile"].as_str(),
        Some("ohttp-relay.Dockerfile")
    );
    assert!(deploy().join("ohttp-relay.Dockerfile").is_file());
    assert_eq!(
        relay["environment"]["GATEWAY_ORIGIN"].as_str(),
        Some(format!("http://relay-1:{port}").as_str())
    );
    let relay_port = relay["environment"]["PORT"].as_str().expect("PORT");
    let tls = services["ohttp-tls"]["command"]
        .as_vec()
        .expect("a command")
        .iter()
        .filter_map(Yaml::as_str)
        .collect::<Vec<_>>();
    assert!(
        tls.contains(&format!("ohttp-relay:{relay_port}").as_str()),
        "Caddy proxies to the OHTTP relay: {tls:?}"
    );
}

#[test]
fn the_dockerfile_runs_as_non_root_with_a_healthcheck() {
    let text = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    assert!(text.contains("FROM rust:1.95-slim-bookworm AS builder"));
    assert!(text.contains("FROM debian:bookworm-slim AS relay"));
    assert!(text.contains("HEALTHCHECK") && text.contains("\"healthcheck\""));
    let relay_stage = text.rsplit("AS relay").next().unwrap();
    assert!(relay_stage.contains("USER 10001"));
}

#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the_systemd_unit_verifies: systemd-analyze not found"
        );
        return;
    }
    let unit = std::fs::read_to_string(deploy().join("tidings-relay.service")).unwrap();
    for hardening in [
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.contains(hardening), "{hardening}");
    }
    // verify insists that the binary exists: point the unit at the one just built.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tidings-relay.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/tidings-relay", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

#[test]
fn the_healthcheck_subcommand_asks_the_admin_endpoint() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n",
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    for key in ["LISTEN", "ADMIN_LISTEN", "DATA_DIR", "TLS_CERT", "TLS_KEY"] {
        cmd.env_remove(format!("TIDINGS_{key}"));
    }
    let mut relay = cmd
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(relay.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let admin = line.trim().rsplit("admin=").next().unwrap().to_owned();
    let check = |addr: &str, path: &str| {
        Command::new(BIN)
            .args(["healthcheck", "--addr", addr, "--path", path])
            .output()
            .unwrap()
            .status
            .success()
    };
    let (healthy, ready, missing) = (
        check(&admin, "/healthz"),
        check(&admin, "/readyz"),
        check(&admin, "/nope"),
    );
    relay.kill().unwrap();
    relay.wait().unwrap();
    assert!(healthy && ready && !missing, "{line}");
    // Nothing listens there any more.
    assert!(!check(&admin, "/healthz"));
}
