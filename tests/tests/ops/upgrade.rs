//! Upgrades in the netns lab: a new build's `init` takes over what an earlier release left
//! running (its maps by ID or through its pins, its programs at their hooks), so flows
//! survive and nothing of the earlier release stays attached.

use aya::EbpfLoader;
use egress_tests::{
    lab::{EGRESS_SOURCE, Lab, SERVER_IP},
    util::{ask, peer_server, router_cli, run_ok_here, wait_listening},
};
use egress_user::{
    EBPF_OBJECT,
    dataplane::{
        attach,
        programs::{self, Interfaces, Mode, Program},
    },
    network::interface::ifindex,
};

/// The router pod's interfaces in the lab.
const INTERFACES: Interfaces<'static> = Interfaces {
    pod: Some("eth0"),
    egress: Some("macvlan0"),
    host: None,
    uplink: None,
};

/// The pod programs of every release (the IPv4 ones: the labs here have no IPv6).
fn pod_programs() -> impl Iterator<Item = &'static Program> {
    programs::wanted(Mode::Pod, false)
}

/// The conntrack flows of `egress-router conntrack --json` that this router translates, by
/// their original tuple.
fn nat_flows(json: &str) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(json)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "nat")
        .map(|f| f["original"].clone())
        .collect()
}

/// This build's BPF object with the egress interface's programs under the names an earlier
/// release gave them (the names have the same lengths, so the ELF stays valid).
fn object_with_former_names() -> Vec<u8> {
    let mut object = EBPF_OBJECT.to_vec();
    for program in pod_programs() {
        let Some(former) = program.former_name else {
            continue;
        };
        let (now, before) = (program.name.as_bytes(), former.as_bytes());
        assert_eq!(now.len(), before.len());
        let mut replaced = 0;
        let mut at = 0;
        while let Some(i) = object[at..].windows(now.len()).position(|w| w == now) {
            object[at + i..at + i + now.len()].copy_from_slice(before);
            at += i + now.len();
            replaced += 1;
        }
        assert!(replaced >= 2, "{} named {replaced} times", program.name);
    }
    object
}

/// The names of the programs attached at each of this build's hooks, per hook.
fn attached_names(lab: &Lab) -> Vec<Vec<String>> {
    lab.router
        .enter(|| {
            pod_programs()
                .map(|program| {
                    let index = ifindex(program.interface(&INTERFACES).unwrap()).unwrap();
                    let ids = attach::program_ids(index, program.hook).unwrap();
                    aya::programs::loaded_programs()
                        .filter_map(Result::ok)
                        .filter(|info| ids.contains(&info.id()))
                        .map(|info| info.name_as_str().unwrap_or("?").to_owned())
                        .collect()
                })
                .collect()
        })
        .unwrap()
}

/// An upgrade from a release whose egress-interface programs had their former names
/// (`uplink_ingress`, `uplink_egress`): `init` finds them by those names and replaces them
/// in place, so each hook holds exactly one program, this build's, and the flows stay.
#[test]
fn upgrade_from_the_former_program_names_replaces_them_in_place() {
    let mut lab = Lab::new("up-names").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    let destination = format!("80 tcp {SERVER_IP}");
    lab.init_router("names", &destination, &[]).unwrap();

    // The earlier release: the same programs under their former names, on the same maps,
    // attached in place of this build's and owned by the interfaces.
    let object = object_with_former_names();
    let pins = lab.pin_dir("names");
    lab.router
        .enter(move || {
            let mut loader = EbpfLoader::new();
            for name in egress_common::maps::ALL {
                loader.map_pin_path(name, pins.join(name));
            }
            let mut ebpf = loader.load(&object).unwrap();
            for program in pod_programs() {
                let name = program.former_name.unwrap_or(program.name);
                let prog = ebpf.program_mut(name).unwrap();
                let classifier: &mut aya::programs::SchedClassifier = prog.try_into().unwrap();
                classifier.load().unwrap();
                // In place of this build's program at the hook, found by its name.
                let iface = program.interface(&INTERFACES).unwrap();
                attach::attach(prog, program, iface, None).unwrap();
            }
        })
        .unwrap();
    let single = |names: &[&str]| -> Vec<Vec<String>> {
        names.iter().map(|n| vec![(*n).to_owned()]).collect()
    };
    assert_eq!(
        attached_names(&lab),
        single(&["pod_ingress", "uplink_ingress", "uplink_egress"])
    );
    let before = ask(&lab, 80);
    assert!(
        before.starts_with(&format!("{EGRESS_SOURCE} ")),
        "through the earlier release: {before:?}"
    );
    let flows_before = nat_flows(&router_cli(&lab, "names", &["conntrack", "--json"]));
    assert_eq!(flows_before.len(), 1, "{flows_before:?}");

    let log = lab.init_router("names", &destination, &[]).unwrap();
    assert!(log.contains("adopted the running data plane"), "{log}");
    assert_eq!(
        attached_names(&lab),
        single(&["pod_ingress", "egress_ingress", "egress_egress"]),
        "replaced in place, nothing of the earlier release left"
    );
    let flows_after = nat_flows(&router_cli(&lab, "names", &["conntrack", "--json"]));
    assert!(
        flows_before.iter().all(|f| flows_after.contains(f)),
        "the earlier flow was kept: {flows_before:?} -> {flows_after:?}"
    );
    let after = ask(&lab, 80);
    assert!(
        after.starts_with(&format!("{EGRESS_SOURCE} ")),
        "through the upgraded data plane: {after:?}"
    );
    // Teardown finds this build's programs and leaves none.
    router_cli(&lab, "names", &["teardown"]);
    assert_eq!(attached_names(&lab), vec![Vec::<String>::new(); 3]);
}

/// An upgrade from a release whose RULES map had another layout (the first release's
/// 8-byte value, before rule flags), found through the instance's pins: `init` takes the
/// pinned conntrack over, so the flow stays, and starts RULES afresh with the rules
/// rewritten in this build's layout.
#[test]
fn upgrade_from_an_older_rules_layout_keeps_flows_and_rewrites_the_rules() {
    let mut lab = Lab::new("up-layout").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    let destination = format!("80 tcp {SERVER_IP}");
    lab.init_router("up", &destination, &[]).unwrap();
    let before = ask(&lab, 80);
    assert!(
        before.starts_with(&format!("{EGRESS_SOURCE} ")),
        "{before:?}"
    );
    let flows_before = nat_flows(&router_cli(&lab, "up", &["conntrack", "--json"]));
    assert_eq!(flows_before.len(), 1, "{flows_before:?}");

    // What the earlier release left: its pins, with RULES in the old layout, and no
    // program on the interfaces (they went with its pod).
    let detached = lab
        .router
        .enter(|| attach::detach_all(Mode::Pod, &INTERFACES).unwrap())
        .unwrap();
    assert_eq!(detached, 3);
    let rules_pin = lab.pin_dir("up").join("RULES");
    std::fs::remove_file(&rules_pin).unwrap();
    let pin = rules_pin.to_str().unwrap();
    let create = [
        "map", "create", pin, "type", "hash", "key", "4", "value", "8", "entries", "4096", "name",
        "RULES",
    ];
    run_ok_here("bpftool", &create);
    assert!(
        run_ok_here("bpftool", &["-j", "map", "show", "pinned", pin]).contains("\"bytes_value\":8")
    );

    let log = lab.init_router("up", &destination, &[]).unwrap();
    assert!(
        log.contains("adopted the running data plane") && log.contains("pinned map RULES"),
        "conntrack taken over, RULES replaced: {log}"
    );
    let shown = run_ok_here("bpftool", &["-j", "map", "show", "pinned", pin]);
    assert!(
        shown.contains("\"bytes_value\":12"),
        "RULES in this build's layout: {shown}"
    );
    let flows_after = nat_flows(&router_cli(&lab, "up", &["conntrack", "--json"]));
    assert!(
        flows_before.iter().all(|f| flows_after.contains(f)),
        "the earlier flow was kept: {flows_before:?} -> {flows_after:?}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&router_cli(&lab, "up", &["status", "--json"])).unwrap();
    let targets: Vec<_> = status["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r["port"], r["target"].as_str().unwrap()))
        .collect();
    assert_eq!(targets, [format!("80 {SERVER_IP}:80")], "{status}");
    assert_eq!(status["programs"].as_array().unwrap().len(), 3, "{status}");
    let after = ask(&lab, 80);
    assert!(
        after.starts_with(&format!("{EGRESS_SOURCE} ")),
        "through the upgraded data plane: {after:?}"
    );

    // The release before this one: this layout, but room for 4096 entries only (no room
    // for the agent's port beside 4096 rules). Rebuilt at this build's capacity.
    lab.router
        .enter(|| attach::detach_all(Mode::Pod, &INTERFACES).unwrap())
        .unwrap();
    std::fs::remove_file(&rules_pin).unwrap();
    let create = [
        "map", "create", pin, "type", "hash", "key", "4", "value", "12", "entries", "4096", "name",
        "RULES",
    ];
    run_ok_here("bpftool", &create);
    let log = lab.init_router("up", &destination, &[]).unwrap();
    assert!(log.contains("holds 4096 entries"), "{log}");
    let shown = run_ok_here("bpftool", &["-j", "map", "show", "pinned", pin]);
    assert!(
        shown.contains(&format!(
            "\"max_entries\":{}",
            egress_common::RULES_CAPACITY
        )),
        "{shown}"
    );
    assert!(ask(&lab, 80).starts_with(&format!("{EGRESS_SOURCE} ")));
}

/// An upgrade from a release whose conntrack entries were shorter (32 bytes, before TCP
/// sequence tracking), found through the instance's pins: the flows are copied into this
/// build's table, with the same translation, and the table keeps its capacity.
#[test]
fn upgrade_from_an_older_conntrack_layout_copies_the_flows() {
    use aya::maps::{HashMap, Map, MapData};
    use egress_common::{FlowEntry, FlowKey};

    let mut lab = Lab::new("up-ct").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    let destination = format!("80 tcp {SERVER_IP}");
    lab.init_router("ct", &destination, &[]).unwrap();
    for _ in 0..3 {
        let answer = ask(&lab, 80);
        assert!(
            answer.starts_with(&format!("{EGRESS_SOURCE} ")),
            "{answer:?}"
        );
    }
    let tuples = |json: &str| -> Vec<(serde_json::Value, serde_json::Value)> {
        let mut all: Vec<_> = serde_json::from_str::<serde_json::Value>(json)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == "nat")
            .map(|f| (f["original"].clone(), f["translated"].clone()))
            .collect();
        all.sort_by_key(|(o, _)| o.to_string());
        all
    };
    let before = tuples(&router_cli(&lab, "ct", &["conntrack", "--json"]));
    assert_eq!(before.len(), 3, "{before:?}");

    // What the earlier release left: its pins, with conntrack entries of 32 bytes, and no
    // program on the interfaces.
    lab.router
        .enter(|| attach::detach_all(Mode::Pod, &INTERFACES).unwrap())
        .unwrap();
    let pin = lab.pin_dir("ct").join("CONNTRACK");
    let rows: Vec<(FlowKey, FlowEntry)> = {
        let map = Map::LruHashMap(MapData::from_pin(&pin).unwrap());
        let table = HashMap::<_, FlowKey, FlowEntry>::try_from(&map).unwrap();
        table.iter().map(Result::unwrap).collect()
    };
    assert!(rows.len() >= 6, "both entries of each flow: {}", rows.len());
    std::fs::remove_file(&pin).unwrap();
    let path = pin.to_str().unwrap();
    let create = [
        "map",
        "create",
        path,
        "type",
        "lru_hash",
        "key",
        "16",
        "value",
        "32",
        "entries",
        "3000",
        "name",
        "CONNTRACK",
    ];
    run_ok_here("bpftool", &create);
    {
        let mut map = Map::LruHashMap(MapData::from_pin(&pin).unwrap());
        let mut table = HashMap::<_, FlowKey, [u8; 32]>::try_from(&mut map).unwrap();
        for (key, entry) in &rows {
            let old: [u8; 32] = bytemuck::bytes_of(entry)[..32].try_into().unwrap();
            table.insert(key, old, 0).unwrap();
        }
    }

    let log = lab.init_router("ct", &destination, &[]).unwrap();
    assert!(
        log.contains("pinned map CONNTRACK")
            && log.contains(&format!("its {} entries were copied", rows.len())),
        "conntrack replaced and its flows copied: {log}"
    );
    let shown = run_ok_here("bpftool", &["-j", "map", "show", "pinned", path]);
    assert!(
        shown.contains("\"bytes_value\":40") && shown.contains("\"max_entries\":3000"),
        "this build's layout, the earlier capacity: {shown}"
    );
    let after = tuples(&router_cli(&lab, "ct", &["conntrack", "--json"]));
    assert_eq!(after, before, "the same flows with the same translation");
    let answer = ask(&lab, 80);
    assert!(
        answer.starts_with(&format!("{EGRESS_SOURCE} ")),
        "{answer:?}"
    );
}
