//! Holding EGRESS_SOURCE against another egress-router with the same address: two with one
//! EGRESS_SOURCE share the stable MAC, so the switch would split the replies between them.
//! The data plane answers probes and rivals' claims with a broadcast claim of its own
//! (egress-ebpf's `shared/claim.rs`) and records the last rival; here, user space reads it
//! and decides: the older claim ([`ClaimId`]) keeps the address, the younger steps down
//! (removes what it set up, so that its restart probes again and is refused while the
//! older one holds it).

use std::time::Duration;

use egress_common::{Claim, ClaimId, claim_flags};

use crate::{
    dataplane::maps::MapSet,
    network::{error::Error as NetworkError, mac::mac_text},
};

/// How often a running agent announces its claim again, so that two holders that missed
/// each other's start (a partition that heals) find each other within this time.
pub const REANNOUNCE: Duration = Duration::from_secs(10);

/// How soon after a younger router's claim the owner announces again.
pub const AFTER_RIVAL: Duration = Duration::from_millis(1500);

/// The kernel's monotonic clock in nanoseconds, as the data plane's `bpf_ktime_get_ns`.
#[must_use]
pub fn ktime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Watches the rivals the data plane records.
#[derive(Clone, Copy, Debug)]
pub struct ClaimWatch {
    ours: ClaimId,
    /// The last rival looked at (its time): each is logged once.
    seen_ns: u64,
}

impl ClaimWatch {
    /// Watches for rivals of `ours` seen from `since_ns` ([`ktime_ns`]) on.
    #[must_use]
    pub const fn new(ours: ClaimId, since_ns: u64) -> Self {
        Self {
            ours,
            seen_ns: since_ns,
        }
    }

    #[must_use]
    pub const fn ours(&self) -> ClaimId {
        self.ours
    }

    /// Looks at the last rival the data plane saw and logs it if it is new. A router's
    /// claim with the same (stable) MAC as ours that is older than ours: this router must
    /// step down. (A claim from another MAC is not acted on: behind port security no host
    /// but the routers sends from the stable MAC, so that is what a forger cannot fake.)
    pub fn check(&mut self, maps: &MapSet) -> Rival {
        let rival = match maps.rival() {
            Ok(Some(rival)) => rival,
            Ok(None) => return Rival::None,
            Err(err) => {
                tracing::warn!(error = %crate::error_chain(&err), "reading the rival claims");
                return Rival::None;
            }
        };
        if rival.at_ns <= self.seen_ns {
            return Rival::None;
        }
        self.seen_ns = rival.at_ns;
        let mac = mac_text(rival.mac);
        let router = rival.flags & claim_flags::TRAILER != 0 && rival.claimed_at_ms != 0;
        if rival.flags & claim_flags::PROBE != 0 {
            tracing::debug!(
                %mac,
                egress_router = router,
                "a host probed for EGRESS_SOURCE; answered with this router's claim"
            );
            return Rival::None;
        }
        let ours_mac = maps.claim().ok().flatten().map(|c| c.mac);
        if router && Some(rival.mac) == ours_mac && rival.id() < self.ours {
            tracing::error!(
                %mac,
                rival_claimed_ms_before = self.ours.claimed_at_ms.saturating_sub(rival.claimed_at_ms),
                "another egress-router holds EGRESS_SOURCE with an older claim: this one steps down"
            );
            return Rival::Older(rival);
        }
        tracing::warn!(
            %mac,
            egress_router = router,
            "another host claims EGRESS_SOURCE; this router's claim is older (or the host is no \
             egress-router with this router's MAC), so it keeps the address and answered with \
             its claim"
        );
        if router { Rival::Younger } else { Rival::None }
    }
}

/// What [`ClaimWatch::check`] found.
#[derive(Clone, Copy, Debug)]
pub enum Rival {
    /// Nothing new that concerns the claim.
    None,
    /// A router with a younger claim: it steps down; the switch may have learnt the shared
    /// MAC at its port meanwhile.
    Younger,
    /// A router with an older claim of the shared MAC: this one steps down.
    Older(Claim),
}

/// The refusal of a router that stepped down for `rival`.
#[must_use]
pub fn stepped_down(
    ip: std::net::IpAddr,
    iface: &str,
    rival: &Claim,
    ours: ClaimId,
) -> NetworkError {
    let before = ours.claimed_at_ms.saturating_sub(rival.claimed_at_ms);
    NetworkError::SourceInUse {
        ip,
        mac: mac_text(rival.mac),
        iface: iface.to_owned(),
        who: format!(
            ", as another egress-router that holds it (claimed {}.{:03} s before ours); this \
             router stepped down and removed what it had set up",
            before / 1000,
            before % 1000
        ),
    }
}

/// What a running agent does for its claim: looks at the rivals every second, announces
/// the address again every [`REANNOUNCE`], and says when to step down.
pub struct Holding {
    watch: ClaimWatch,
    iface: String,
    next_announce: tokio::time::Instant,
}

impl Holding {
    /// For `instance`, whose egress interface is `iface`; rivals its data plane recorded
    /// since it answers with the claim are news (the set-up looked only once).
    #[must_use]
    pub fn new(instance: &crate::instance::Instance, iface: &str) -> Self {
        Self {
            watch: ClaimWatch::new(instance.claim(), instance.claim_since()),
            iface: iface.to_owned(),
            next_announce: tokio::time::Instant::now() + REANNOUNCE,
        }
    }

    /// One look (call it every second or so). `Err`: a rival holds the address with an
    /// older claim; the caller steps down ([`step_down`]).
    pub async fn tick(&mut self, instance: &crate::instance::Instance) -> Result<(), Claim> {
        let now = tokio::time::Instant::now();
        match self.watch.check(instance.maps()) {
            Rival::Older(rival) => return Err(rival),
            // The younger router's frames may have taught the switch our shared MAC at its
            // port: announced again once it has stepped down (its announcements are 0.5 s
            // apart), so that traffic to an idle owner is not lost until the next round.
            Rival::Younger => self.next_announce = self.next_announce.min(now + AFTER_RIVAL),
            Rival::None => {}
        }
        if now < self.next_announce {
            return Ok(());
        }
        self.next_announce = now + REANNOUNCE;
        let router = instance.router();
        let ip = std::net::Ipv4Addr::from(router.egress_source);
        let mac = instance.maps().claim().ok().flatten().map(|c| c.mac);
        if let Some(mac) = mac.filter(|_| !ip.is_unspecified()) {
            let sent = crate::network::announce::announce(
                &self.iface,
                router.egress_ifindex,
                mac,
                ip,
                Duration::ZERO,
                Some(self.watch.ours()),
            )
            .await;
            if let Err(err) = sent {
                tracing::warn!(error = %crate::error_chain(&err), "announcing EGRESS_SOURCE again");
            }
        }
        Ok(())
    }
}
