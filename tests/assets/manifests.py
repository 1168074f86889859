"""Validates deploy/ manifests offline and prints what the tests check next.

usage: manifests.py VERSION FILE...

Every document is validated strictly (unknown fields are errors) against the Kubernetes
VERSION schemas that the kubernetes-validate package carries (nothing is downloaded). A
NetworkAttachmentDefinition (Multus, a CRD with no schema there) is checked for what
Multus reads: spec.config, a JSON CNI configuration of a macvlan (master, mode) or a
host-device (the device), with an ipam section. Exits 1 naming each failure.

On success prints one JSON object: {"containers": [...], "configmaps": {...}}, with each
container's file, workload, name, whether it is an init container, privileged or not, and
its command and arguments, its environment (values, or {"configMapKeyRef": {...}} and the
like), and each ConfigMap's data.
"""
import json
import sys

import kubernetes_validate
import yaml

MACVLAN_MODES = {"bridge", "private", "vepa", "passthru"}


def check_nad(doc):
    problems = []
    if doc.get("apiVersion") != "k8s.cni.cncf.io/v1":
        problems.append(f"apiVersion {doc.get('apiVersion')!r}")
    if not doc.get("metadata", {}).get("name"):
        problems.append("no metadata.name")
    extra = set(doc.get("spec", {})) - {"config"}
    if extra:
        problems.append(f"unknown spec fields {sorted(extra)}")
    try:
        config = json.loads(doc["spec"]["config"])
    except (KeyError, TypeError, ValueError) as err:
        return problems + [f"spec.config is not JSON: {err}"]
    kind = config.get("type")
    if kind == "macvlan":
        if not config.get("master"):
            problems.append("no master")
        if config.get("mode") not in MACVLAN_MODES:
            problems.append(f"mode {config.get('mode')!r}")
    elif kind == "host-device":
        if not any(config.get(k) for k in ("device", "hwaddr", "kernelpath", "pciBusID")):
            problems.append("host-device names no device")
    else:
        problems.append(f"type {kind!r}, not macvlan or host-device")
    if "ipam" not in config or "cniVersion" not in config:
        problems.append("no ipam or cniVersion")
    return problems


def main():
    version, files = sys.argv[1], sys.argv[2:]
    failures, containers, configmaps = [], [], {}
    for path in files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        for doc in docs:
            kind = doc.get("kind")
            name = doc.get("metadata", {}).get("name")
            if kind == "NetworkAttachmentDefinition":
                failures += [f"{path}: {kind}/{name}: {p}" for p in check_nad(doc)]
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                failures.append(f"{path}: {kind}/{name}: {err.message} at {list(err.path)}")
                continue
            except kubernetes_validate.SchemaNotFoundError as err:
                failures.append(f"{path}: {kind}/{name}: no schema: {err}")
                continue
            if kind == "ConfigMap":
                configmaps[name] = doc.get("data", {})
            if kind in ("Deployment", "Pod", "DaemonSet"):
                spec = doc["spec"]["template"]["spec"] if kind != "Pod" else doc["spec"]
                for init, key in ((True, "initContainers"), (False, "containers")):
                    for c in spec.get(key, []):
                        env = {}
                        for e in c.get("env", []):
                            if "value" in e:
                                env[e["name"]] = e["value"]
                            else:
                                env[e["name"]] = e.get("valueFrom", {})
                        containers.append({
                            "file": path,
                            "workload": name,
                            "name": c["name"],
                            "init": init,
                            "privileged": bool(
                                c.get("securityContext", {}).get("privileged")),
                            "args": c.get("command", []) + c.get("args", []),
                            "env": env,
                        })
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"containers": containers, "configmaps": configmaps}))


if __name__ == "__main__":
    main()
