//! The GC pass with the judging done in the kernel: the data plane's sweep program
//! (`egress_common::programs::CT_SWEEP`) visits every entry of a table where it lies and
//! hands over only the collectable flows and the per-client census, instead of the agent
//! copying the whole table out (2M entries at 1M flows, most of a pass's time). The flows
//! are then removed as the agent's own pass removes them ([`super::gc`]): read again,
//! taken out, judged again, put back if a packet refreshed them. When the sweep cannot run
//! or its lists overflow, the table gets the agent's own pass. Both families' tables are
//! swept so, each into its own lists.

use std::collections::HashMap as StdHashMap;

use aya::{
    maps::{Array, HashMap},
    programs::{TestRun as _, TestRunOptions},
};
use egress_common::{Doomed, SweepState, maps, programs};

use super::gc::{FamilyPass, GcPass, collect_table, remove_flow};
use crate::dataplane::{
    error::Error as LoadError, family::CtFamily, flows::CtTable, load::Dataplane, maps::Error,
};

/// What the sweep found in one table.
struct Found<A> {
    entries: u64,
    doomed: Vec<Doomed<A>>,
    census: Vec<(A, u32)>,
}

/// [`super::collect_garbage`] with the sweep in the kernel; the same result.
pub fn collect_garbage_in_kernel(dp: &mut Dataplane, now: u64) -> Result<GcPass, Error> {
    Ok(GcPass {
        v4: family_pass(dp, now)?,
        v6: family_pass(dp, now)?,
    })
}

/// [`collect_garbage_in_kernel`] on one family's two tables.
fn family_pass<A: CtFamily>(dp: &mut Dataplane, now: u64) -> Result<FamilyPass<A>, Error> {
    let mut flows_by_source = StdHashMap::new();
    let answered = table_pass::<A>(dp, CtTable::Replied, now, &mut flows_by_source)?;
    let unreplied = table_pass::<A>(dp, CtTable::Unreplied, now, &mut flows_by_source)?;
    FamilyPass::of(dp.maps(), flows_by_source, answered, unreplied)
}

/// What the sweep alone finds in family `A`'s table `t` at `now`, changing nothing in
/// it: (entries, collectable flows), or `None` when its lists overflow. For tests and the
/// bench.
pub fn sweep_only<A: CtFamily>(
    dp: &mut Dataplane,
    t: CtTable,
    now: u64,
) -> Result<Option<(u64, usize)>, LoadError> {
    Ok(sweep::<A>(dp, t, now)?.map(|found| (found.entries, found.doomed.len())))
}

fn table_pass<A: CtFamily>(
    dp: &mut Dataplane,
    t: CtTable,
    now: u64,
    flows_by_source: &mut StdHashMap<A, u32>,
) -> Result<(u64, u64), Error> {
    let found = match sweep::<A>(dp, t, now) {
        Ok(Some(found)) => found,
        outcome => {
            match outcome {
                Err(err) => {
                    tracing::warn!(table = ?t, error = %crate::error_chain(&err), "GC sweep failed; the agent's own pass instead")
                }
                _ => {
                    tracing::debug!(table = ?t, "GC sweep overflowed; the agent's own pass instead")
                }
            }
            return collect_table(dp.maps_mut(), t, now, &mut |_| {}, flows_by_source);
        }
    };
    for (source, n) in found.census {
        *flows_by_source.entry(source).or_default() += n;
    }
    let mut expired = 0;
    for d in &found.doomed {
        let peer = (d.has_peer != 0).then_some(&d.peer);
        expired += remove_flow(dp.maps_mut(), t, &d.key, peer, now, &mut |_| {})?;
    }
    Ok((found.entries, expired))
}

/// Runs the sweep over family `A`'s table `t`; `None` when its lists overflowed.
fn sweep<A: CtFamily>(
    dp: &mut Dataplane,
    t: CtTable,
    now: u64,
) -> Result<Option<Found<A>>, LoadError> {
    let ipv6 = A::IPV6;
    let (census_name, doomed_name) = if ipv6 {
        (maps::CT_CENSUS6, maps::CT_DOOMED6)
    } else {
        (maps::CT_CENSUS, maps::CT_DOOMED)
    };
    let map = |name| move |source| LoadError::Maps(Error::Map { name, source });
    let (prog, state, doomed, census) = dp.sweep(ipv6)?;
    let mut census: HashMap<_, A, u32> = HashMap::try_from(census).map_err(map(census_name))?;
    // Left empty by the previous sweep; emptied again in case one failed midway.
    let stale: Vec<A> = census.keys().filter_map(Result::ok).collect();
    for key in stale {
        census.remove(&key).map_err(map(census_name))?;
    }
    let mut state: Array<_, SweepState> = Array::try_from(state).map_err(map(maps::CT_SWEEP))?;
    let args = SweepState {
        now,
        table: SweepState::table_index(ipv6, t == CtTable::Replied),
        ..SweepState::default()
    };
    state.set(0, args, 0).map_err(map(maps::CT_SWEEP))?;
    // The program reads nothing of the frame; BPF_PROG_TEST_RUN wants an Ethernet header.
    let frame = [0u8; 64];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(&frame);
    prog.test_run(opts).map_err(|source| LoadError::Program {
        name: programs::CT_SWEEP,
        source,
    })?;
    let result = state.get(&0, 0).map_err(map(maps::CT_SWEEP))?;
    let counts: Vec<(A, u32)> = census.iter().filter_map(Result::ok).collect();
    for (key, _) in &counts {
        census.remove(key).map_err(map(census_name))?;
    }
    if result.overflow != 0 {
        return Ok(None);
    }
    let doomed_list: Array<_, Doomed<A>> = Array::try_from(doomed).map_err(map(doomed_name))?;
    let doomed = (0..result.doomed)
        .map(|i| doomed_list.get(&i, 0).map_err(map(doomed_name)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Found {
        entries: u64::from(result.entries),
        doomed,
        census: counts,
    }))
}
