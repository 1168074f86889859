//! The manifests in `deploy/` are what an admin applies: each document validates strictly
//! against the Kubernetes schemas (offline, tests/assets/manifests.py), every variable they
//! set is one the binary reads, and the configuration they give each container passes the
//! binary's own validation (`EGRESS_ROUTER_MODE=unit-test`).

use std::{collections::BTreeSet, path::PathBuf, process::Command, time::Duration};

use egress_tests::{asset, egress_router_bin, netns::run_bounded, util::tempdir};

/// OpenShift 4.17's Kubernetes.
const KUBERNETES: &str = "1.30.0";

fn manifests() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut files: Vec<PathBuf> = ["openshift", "kubernetes", "node"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(root.join(dir)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn validate(files: &[PathBuf]) -> std::process::Output {
    run_bounded(
        Command::new("python3")
            .arg(asset("manifests.py"))
            .arg(KUBERNETES)
            .args(files),
        Duration::from_secs(60),
    )
    .unwrap()
}

/// The variables the binary reads, from its help (`[env: NAME=]`).
fn known_variables() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for args in [
        &["--help"][..],
        &["http-proxy", "--help"],
        &["dns-proxy", "--help"],
        &["node", "--help"],
        &["node-register", "--help"],
    ] {
        let out = run_bounded(
            Command::new(egress_router_bin()).args(args),
            Duration::from_secs(10),
        )
        .unwrap();
        let help = String::from_utf8_lossy(&out.stdout).into_owned();
        for part in help.split("[env: ").skip(1) {
            names.insert(part.split('=').next().unwrap().to_owned());
        }
    }
    names
}

#[test]
fn manifests_validate_and_configure_the_binary_as_it_expects() {
    let files = manifests();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 7, "{names:?}");
    let out = validate(&files);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let containers = found["containers"].as_array().unwrap();
    let configmaps = &found["configmaps"];
    let known = known_variables();
    assert!(known.contains("EGRESS_SOURCE") && known.contains("EGRESS_HTTP_PROXY_THREADS"));

    let mut checked = 0;
    for c in containers {
        let what = format!("{} {}/{}", c["file"], c["workload"], c["name"]);
        let env = c["env"].as_object().unwrap();
        for name in env.keys() {
            assert!(
                known.contains(name),
                "{what}: {name} is not a variable of the binary"
            );
        }
        // The variables as the container gets them: ConfigMap keys resolved, and the
        // config file replaced by its ConfigMap's content.
        let value = |v: &serde_json::Value| -> String {
            match v.as_str() {
                Some(s) => s.to_owned(),
                // The downward API (the pod's IP): what the cluster fills in.
                None if v.get("fieldRef").is_some() => "192.0.2.10".to_owned(),
                None => {
                    let r = &v["configMapKeyRef"];
                    let name = r["name"].as_str().unwrap();
                    let key = r["key"].as_str().unwrap();
                    configmaps[name][key]
                        .as_str()
                        .unwrap_or_else(|| panic!("{what}: no ConfigMap {name} key {key}"))
                        .to_owned()
                }
            }
        };
        let mode = env.get("EGRESS_ROUTER_MODE").map(value);
        let proxy = env.contains_key("EGRESS_HTTP_PROXY_DESTINATION")
            || env.contains_key("EGRESS_DNS_PROXY_DESTINATION");
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        let registers = args.first() == Some(&"node-register");
        // Privileges as OpenShift's documentation has them: init containers privileged,
        // the proxies' main containers not (node mode's router pods need none).
        if c["init"] == true && !registers {
            assert_eq!(c["privileged"], true, "{what}");
        }
        if proxy {
            assert_eq!(c["privileged"], false, "{what}");
            assert_eq!(c["init"], false, "{what}");
        }
        if args.first() == Some(&"node") {
            // The node agent: privileged, on the node's uplink.
            assert_eq!(c["privileged"], true, "{what}");
            assert!(env.contains_key("EGRESS_ROUTER_UPLINK"), "{what}");
            continue;
        }
        if registers {
            // A router pod in node mode: no privileges; its registration passes.
            assert_eq!(c["privileged"], false, "{what}");
            if args.contains(&"--stay") {
                continue;
            }
            let spool = tempdir("manifests-spool");
            let mut cmd = Command::new(egress_router_bin());
            cmd.env_clear().arg("node-register");
            for (name, v) in env {
                cmd.env(name, value(v));
            }
            cmd.env("EGRESS_ROUTER_SPOOL", &*spool);
            let out = run_bounded(&mut cmd, Duration::from_secs(10)).unwrap();
            assert!(
                out.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let file = std::fs::read_to_string(spool.join("192.0.2.10.json")).unwrap();
            assert!(file.contains("8080 tcp 203.0.113.26 80"), "{what}: {file}");
            checked += 1;
            continue;
        }
        if !matches!(mode.as_deref(), Some("init" | "legacy")) {
            continue;
        }
        let mut cmd = Command::new(egress_router_bin());
        cmd.env_clear();
        for (name, v) in env {
            cmd.env(name, value(v));
        }
        if env.contains_key("EGRESS_ROUTER_CONFIG_FILE") {
            // The volume's ConfigMap: the file is what the agent reads.
            let mounted = configmaps
                .as_object()
                .unwrap()
                .values()
                .find_map(|data| data["destination"].as_str())
                .unwrap_or_else(|| panic!("{what}: no ConfigMap with a destination key"));
            let dir = tempdir("manifests");
            let file = dir.join("destination");
            std::fs::write(&file, mounted).unwrap();
            cmd.env("EGRESS_ROUTER_CONFIG_FILE", &file);
            cmd.env("EGRESS_ROUTER_MODE", "unit-test");
            let out = run_bounded(&mut cmd, Duration::from_secs(10)).unwrap();
            assert!(
                out.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            cmd.env("EGRESS_ROUTER_MODE", "unit-test");
            let out = run_bounded(&mut cmd, Duration::from_secs(10)).unwrap();
            assert!(
                out.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let plan = String::from_utf8_lossy(&out.stdout);
            assert!(
                plan.contains("rule tcp 80 -> 203.0.113.25:80"),
                "{what}: {plan}"
            );
        }
        checked += 1;
    }
    assert_eq!(
        checked, 7,
        "three redirect Deployments, init and agent each, and node mode's registration"
    );

    // The validator fails on what the API server would refuse.
    let dir = tempdir("manifests-bad");
    let bad = dir.join("bad.yaml");
    let broken = std::fs::read_to_string(
        files
            .iter()
            .find(|f| f.ends_with("node/router.yaml"))
            .unwrap(),
    )
    .unwrap()
    .replacen("replicas: 1", "replica: 1", 1);
    std::fs::write(&bad, broken).unwrap();
    let out = validate(&[bad]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("'replica' was unexpected"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
