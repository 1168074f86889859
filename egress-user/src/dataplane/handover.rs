//! The hand-over from a running data plane to a new load, so that a restart or an upgrade
//! keeps every flow: the maps of the program attached to the pod interface (the live ones)
//! are pinned in the instance's directory, and the new object is loaded with those pins.
//! Maps whose layout this build changed, or that are new in it, start afresh; the others
//! (conntrack above all) are taken over. Where no bpffs can hold pins, a scratch one serves
//! for the length of the set-up.

use std::path::{Path, PathBuf};

use egress_common::maps;

use crate::{
    dataplane::{
        bpffs::{ScratchBpffs, prepare_bpffs},
        discover::{self, Source},
        load::{self, Dataplane, LoadOptions},
        maps::MapSet,
        migrate,
    },
    error_chain,
};

/// What the hand-over did, for the log and `status`.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Where the maps are pinned, if a persistent bpffs was available.
    pub pin_dir: Option<PathBuf>,
    /// Why the maps are not pinned, if they are not.
    pub pin_warning: Option<String>,
    /// The running data plane whose maps (conntrack included) were taken over, if any.
    pub adopted: Option<Source>,
    /// Why (part of) a running data plane could not be taken over, if one was found.
    pub adopt_warning: Option<String>,
}

/// A hand-over in progress.
pub struct Handover {
    pin_dir: Option<PathBuf>,
    scratch: Option<ScratchBpffs>,
    report: Report,
}

impl Handover {
    /// Finds the instance's pin directory (on `bpffs_root`, mounted if need be, else on a
    /// scratch bpffs) and pins the maps of the data plane attached to `pod_interface`
    /// there. Changes nothing else.
    #[must_use]
    pub fn prepare(bpffs_root: &Path, instance: &str, pod_interface: &str) -> Self {
        let mut report = Report::default();
        let (pin_dir, scratch) = match prepare_bpffs(bpffs_root) {
            Ok(()) => (Some(bpffs_root.join(instance)), None),
            // No bpffs to keep pins in (e.g. /sys/fs/bpf missing in a container): a private
            // one, gone when set-up ends, still hands the running maps over.
            Err(err) => match ScratchBpffs::mount() {
                Ok(scratch) => {
                    report.pin_warning = Some(err);
                    (Some(scratch.path().join(instance)), Some(scratch))
                }
                Err(scratch_err) => {
                    report.pin_warning = Some(format!("{err}; {scratch_err}"));
                    (None, None)
                }
            },
        };
        let running = discover::map_ids_of_attached(pod_interface)
            .map_err(|err| error_chain(&err).to_string())
            .and_then(|found| match found {
                Some((ids, program_id)) => MapSet::compatible_from_ids(&ids)
                    .map(|(maps, left)| Some((maps, left, program_id, ids)))
                    .map_err(|err| error_chain(&err).to_string()),
                None => Ok(None),
            });
        match (running, &pin_dir) {
            (Ok(Some((maps, left, program_id, ids))), Some(dir)) => match maps.pin(dir) {
                Ok(()) => {
                    // An earlier layout of the conntrack table is pinned too: the load
                    // copies its flows into this build's.
                    let earlier = !maps.has(maps::CONNTRACK)
                        && migrate::pin_earlier(&ids, dir).unwrap_or_else(|err| {
                            report.adopt_warning = Some(error_chain(&err).to_string());
                            false
                        });
                    if maps.has(maps::CONNTRACK) || earlier {
                        report.adopted = Some(Source::Attached { program_id });
                    }
                    if !left.is_empty() {
                        let why: Vec<String> = left
                            .iter()
                            .map(|(_, err)| error_chain(err).to_string())
                            .collect();
                        report.adopt_warning = Some(format!(
                            "started afresh (new or changed in this build): {}",
                            why.join("; ")
                        ));
                    }
                }
                Err(err) => report.adopt_warning = Some(error_chain(&err).to_string()),
            },
            (Ok(Some(_)), None) => {
                report.adopt_warning = Some(
                    "no bpffs to hand its maps over through; its flows are dropped".to_owned(),
                );
            }
            (Ok(None), _) => {}
            (Err(err), _) => report.adopt_warning = Some(err),
        }
        Self {
            pin_dir,
            scratch,
            report,
        }
    }

    /// Whether a data plane attached to the pod interface is being taken over (a restart in
    /// the same pod, or the agent after the init container), not only pins left behind.
    #[must_use]
    pub fn takes_over_attached(&self) -> bool {
        matches!(self.report.adopted, Some(Source::Attached { .. }))
    }

    /// Loads the object on the handed-over maps (and pins of an earlier run), with its
    /// IPv6 programs if `ipv6`.
    pub fn load(&mut self, conntrack_flows: u32, ipv6: bool) -> Result<Dataplane, load::Error> {
        let dataplane = Dataplane::load(&LoadOptions {
            conntrack_flows,
            pin_dir: self.pin_dir.clone(),
            ipv6,
        })?;
        let reuse = dataplane.reuse();
        let carried = reuse.reused.contains(&maps::CONNTRACK) || !reuse.migrated.is_empty();
        if self.report.adopted.is_none() && carried {
            self.report.adopted = self.pin_dir.clone().map(Source::Pins);
        }
        if let Some(dir) = &self.pin_dir
            && !reuse.replaced.is_empty()
        {
            let each: Vec<String> = reuse
                .replaced
                .iter()
                .map(|(name, why)| {
                    let copied = reuse
                        .migrated
                        .iter()
                        .find(|(m, _)| m == name)
                        .map(|(_, n)| format!("; its {n} entries were copied into it"))
                        .unwrap_or_default();
                    format!(
                        "pinned map {name} in {} replaced: {why}{copied}",
                        dir.display()
                    )
                })
                .collect();
            self.report.adopt_warning = Some(each.join("; "));
        }
        Ok(dataplane)
    }

    /// Where the maps are pinned during the set-up, if anywhere.
    #[must_use]
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    /// Ends the hand-over once the new programs are attached: pins on a scratch bpffs
    /// vanish with it, and the maps live on in the programs.
    #[must_use]
    pub fn finish(self) -> Report {
        let mut report = self.report;
        if self.scratch.is_none() {
            report.pin_dir = self.pin_dir;
        }
        drop(self.scratch);
        report
    }
}
