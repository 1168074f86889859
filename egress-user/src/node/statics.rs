//! Static instances: a directory of files (a ConfigMap mounted into the node agent), each
//! the configuration of one instance by name, which a router pod's registration names
//! instead of carrying the variables. A file is either
//!
//! - OpenShift 4's `EgressRouter` resource (`network.operator.openshift.io/v1`) as an admin
//!   wrote it for egress-router-cni: `spec.addresses[0]` (`ip`, `gateway`), `spec.mode:
//!   Redirect`, `spec.redirect.redirectRules` (`destinationIP`, `port`, `protocol`,
//!   `targetPort`) and `spec.redirect.fallbackIP`, named by `metadata.name`; what does not
//!   apply in node mode (`spec.networkInterface`: there is no macvlan; addresses after the
//!   first, which egress-router-cni does not use either) is named in a warning, never
//!   ignored silently;
//! - or the variables as keys (`EGRESS_SOURCE`, `EGRESS_GATEWAY`, `EGRESS_DESTINATION`),
//!   named by the file's name without its extension.
//!
//! Either way the result is the variables, validated as a registration's are.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use yaml_serde::Value;

use crate::config::redirect::Raw;

/// One static instance: its name, its variables, and what of the file was not used.
#[derive(Clone, Debug, Default)]
pub struct StaticInstance {
    pub name: String,
    pub raw: Raw,
    pub warnings: Vec<String>,
}

/// Reads every `*.yaml` and `*.yml` file of `dir` (a missing directory has none): by name,
/// the instances, and by file, the reason a file could not be read.
pub fn read_dir(dir: &Path) -> (BTreeMap<String, StaticInstance>, Vec<(PathBuf, String)>) {
    let mut found = BTreeMap::new();
    let mut failed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (found, failed);
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    for path in files {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match std::fs::read_to_string(&path)
            .map_err(|e| crate::error_chain(&e).to_string())
            .and_then(|text| parse(&text, &stem))
        {
            Ok(instance) if found.contains_key(&instance.name) => {
                failed.push((path, format!("a second instance named {}", instance.name)))
            }
            Ok(instance) => {
                found.insert(instance.name.clone(), instance);
            }
            Err(reason) => failed.push((path, reason)),
        }
    }
    (found, failed)
}

/// One file's instance (`stem`: the file's name without extension, the name of a file of
/// variables).
pub fn parse(text: &str, stem: &str) -> Result<StaticInstance, String> {
    let doc: Value =
        yaml_serde::from_str(text).map_err(|e| format!("not YAML: {}", crate::error_chain(&e)))?;
    if doc.get("kind").is_some() {
        egress_router(&doc)
    } else {
        variables(&doc, stem)
    }
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A file of variables.
fn variables(doc: &Value, stem: &str) -> Result<StaticInstance, String> {
    let map = doc
        .as_mapping()
        .ok_or("neither an EgressRouter nor a map of variables")?;
    let mut instance = StaticInstance {
        name: stem.to_owned(),
        ..StaticInstance::default()
    };
    for (key, value) in map {
        let key = key.as_str().unwrap_or_default();
        let value = text_of(value).ok_or_else(|| format!("{key}: not a string"))?;
        match key {
            "EGRESS_SOURCE" => instance.raw.source = Some(value),
            "EGRESS_GATEWAY" => instance.raw.gateway = Some(value),
            "EGRESS_DESTINATION" => instance.raw.destination = Some(value),
            other => instance
                .warnings
                .push(format!("{other}: not a variable of node mode, not used")),
        }
    }
    Ok(instance)
}

/// An `EgressRouter` resource.
fn egress_router(doc: &Value) -> Result<StaticInstance, String> {
    let api = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != "EgressRouter" || !api.starts_with("network.operator.openshift.io/") {
        return Err(format!(
            "kind {kind} of {api}: only OpenShift's EgressRouter (network.operator.openshift.io/v1) configures an instance"
        ));
    }
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .ok_or("metadata.name is missing")?;
    let spec = doc.get("spec").ok_or("spec is missing")?;
    let mut instance = StaticInstance {
        name: name.to_owned(),
        ..StaticInstance::default()
    };
    let mode = spec
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or("Redirect");
    if mode != "Redirect" {
        return Err(format!("spec.mode {mode}: node mode serves Redirect"));
    }
    let addresses = spec
        .get("addresses")
        .and_then(Value::as_sequence)
        .filter(|a| !a.is_empty())
        .ok_or("spec.addresses is missing or empty")?;
    let first = &addresses[0];
    instance.raw.source = first.get("ip").and_then(text_of);
    instance.raw.gateway = first.get("gateway").and_then(text_of);
    if addresses.len() > 1 {
        instance.warnings.push(format!(
            "spec.addresses[1..]: {} more address(es) not used (egress-router-cni uses the first only)",
            addresses.len() - 1
        ));
    }
    let mut lines = Vec::new();
    let redirect = spec.get("redirect");
    let rules = redirect
        .and_then(|r| r.get("redirectRules"))
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        let field = |name: &str| rule.get(name).and_then(text_of);
        let at = |what: &str| format!("spec.redirect.redirectRules[{i}].{what}");
        let ip =
            field("destinationIP").ok_or_else(|| format!("{} is missing", at("destinationIP")))?;
        let port = field("port").ok_or_else(|| format!("{} is missing", at("port")))?;
        let protocol = field("protocol").unwrap_or_else(|| "TCP".to_owned());
        let protocol = match protocol.to_ascii_uppercase().as_str() {
            "TCP" => "tcp",
            "UDP" => "udp",
            other => return Err(format!("{} {other}: TCP and UDP only", at("protocol"))),
        };
        let mut line = format!("{port} {protocol} {ip}");
        if let Some(target) = field("targetPort") {
            line.push_str(&format!(" {target}"));
        }
        lines.push(line);
    }
    if let Some(fallback) = redirect.and_then(|r| r.get("fallbackIP")).and_then(text_of) {
        lines.push(fallback);
    }
    instance.raw.destination = Some(lines.join("\n"));
    for (key, _) in spec.as_mapping().into_iter().flatten() {
        let key = key.as_str().unwrap_or_default();
        if !matches!(key, "addresses" | "mode" | "redirect") {
            let why = if key == "networkInterface" {
                "node mode sends from the node's uplink, with no macvlan"
            } else {
                "not a field node mode knows"
            };
            instance
                .warnings
                .push(format!("spec.{key}: not used ({why})"));
        }
    }
    Ok(instance)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenShift's documented example, as an admin applied it for egress-router-cni.
    const EGRESS_ROUTER: &str = r#"
apiVersion: network.operator.openshift.io/v1
kind: EgressRouter
metadata:
  name: egress-router-redirect
spec:
  networkInterface: {
    macvlan: {
      mode: "Bridge"
    }
  }
  addresses: [
    {
      ip: "192.168.12.99/24",
      gateway: "192.168.12.1"
    }
  ]
  mode: Redirect
  redirect: {
    redirectRules: [
      {
        destinationIP: "10.0.0.99",
        port: 80,
        protocol: UDP
      },
      {
        destinationIP: "203.0.113.26",
        port: 8080,
        targetPort: 80,
        protocol: TCP
      }
    ],
    fallbackIP: "203.0.113.27"
  }
"#;

    #[test]
    fn an_egress_router_resource_becomes_the_variables_and_names_what_it_drops() {
        let instance = parse(EGRESS_ROUTER, "ignored").unwrap();
        assert_eq!(instance.name, "egress-router-redirect");
        assert_eq!(instance.raw.source.as_deref(), Some("192.168.12.99/24"));
        assert_eq!(instance.raw.gateway.as_deref(), Some("192.168.12.1"));
        assert_eq!(
            instance.raw.destination.as_deref(),
            Some("80 udp 10.0.0.99\n8080 tcp 203.0.113.26 80\n203.0.113.27")
        );
        assert_eq!(instance.warnings.len(), 1, "{:?}", instance.warnings);
        assert!(instance.warnings[0].starts_with("spec.networkInterface"));
        // What node mode cannot do is an error naming the field.
        let sctp = EGRESS_ROUTER.replace("protocol: TCP", "protocol: SCTP");
        let err = parse(&sctp, "x").unwrap_err();
        assert!(err.contains("redirectRules[1].protocol SCTP"), "{err}");
        let other = EGRESS_ROUTER.replace("kind: EgressRouter", "kind: ConfigMap");
        assert!(parse(&other, "x").is_err());
    }

    #[test]
    fn a_file_of_variables_is_named_after_the_file() {
        let instance = parse(
            "EGRESS_SOURCE: 198.51.100.99/24\nEGRESS_GATEWAY: 198.51.100.1\nEGRESS_DESTINATION: |\n  80 tcp 203.0.113.10\nEXTRA: 1\n",
            "web",
        )
        .unwrap();
        assert_eq!(instance.name, "web");
        assert_eq!(
            instance.raw.destination.as_deref(),
            Some("80 tcp 203.0.113.10\n")
        );
        assert_eq!(
            instance.warnings,
            ["EXTRA: not a variable of node mode, not used"]
        );
    }
}
