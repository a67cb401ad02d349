//! MetalLB's configuration (IPAddressPools and L2Advertisements) and when a
//! new one may replace the running one.
//!
//! MetalLB's speaker refuses a configuration under which an IP it announces
//! has no pool any more (`SetConfig`: "service has no configuration under
//! new config", `SyncStateError`), keeps running on the last one it
//! accepted, and exposes that as `metallb_k8s_client_config_stale_bool` = 1
//! until a configuration it can accept arrives. The same rule is applied
//! here to both sources, and extended to the advertisement: an announced IP
//! whose pool no L2Advertisement names any more would be withdrawn just as
//! surely (`noMatchingAdvertisement`), so that configuration is refused too.
//! A pool or advertisement that became invalid is skipped by the sources, so
//! it counts as removed: while it carries announced IPs, the last good one
//! stays in use.
//!
//! What is *not* refused: a configuration that only moves this node out of
//! an advertisement's `nodeSelectors` or `interfaces` (the operator asked for
//! exactly that), and the removal of a pool together with its Services.

use std::{
    collections::BTreeMap,
    fmt,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use prometheus_client::metrics::gauge::Gauge;
use tracing::{error, info};

use super::ClusterState;
use crate::election::{ElectionOptions, IpAddressPool, L2Advertisement};

/// What an announced IP would lose under a proposed configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// No pool holds the service's IPs.
    Pool,
    /// The pool is there, but no L2Advertisement applies to it.
    Advertisement,
}

/// A service this node announces that a proposed configuration would orphan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// `namespace/name`.
    pub service: String,
    pub ips: Vec<IpAddr>,
    pub loss: Loss,
    /// The pool that holds the IPs now, if any.
    pub pool: Option<String>,
}

impl fmt::Display for Orphan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ips: Vec<String> = self.ips.iter().map(IpAddr::to_string).collect();
        let pool = self
            .pool
            .as_deref()
            .map_or_else(String::new, |p| format!(" of pool {p}"));
        match self.loss {
            Loss::Pool => write!(
                f,
                "{} announces {}{pool}, which no IPAddressPool would hold",
                self.service,
                ips.join(",")
            ),
            Loss::Advertisement => write!(
                f,
                "{} announces {}{pool}, which no L2Advertisement would advertise",
                self.service,
                ips.join(",")
            ),
        }
    }
}

/// Why a proposed configuration was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Sorted by service; never empty.
    pub orphans: Vec<Orphan>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line whatever the count: the first few name what to fix.
        const SHOWN: usize = 3;
        let shown: Vec<String> = self
            .orphans
            .iter()
            .take(SHOWN)
            .map(Orphan::to_string)
            .collect();
        f.write_str(&shown.join("; "))?;
        if self.orphans.len() > SHOWN {
            write!(f, "; and {} more services", self.orphans.len() - SHOWN)?;
        }
        Ok(())
    }
}

/// Checks `pools` and `advertisements` against the services this node
/// announces (`announced`: name and ingress IPs). Pure: the decision only.
pub fn check<'a>(
    options: &ElectionOptions,
    current: (&[IpAddressPool], &[L2Advertisement]),
    proposed: (&[IpAddressPool], &[L2Advertisement]),
    announced: impl IntoIterator<Item = (String, &'a [IpAddr])>,
) -> Result<(), Refusal> {
    let view_of = |(pools, advertisements): (&[IpAddressPool], &[L2Advertisement])| {
        ClusterState {
            pools: pools.to_vec(),
            advertisements: advertisements.to_vec(),
            ..ClusterState::default()
        }
        .view(options.clone())
    };
    let (current, proposed) = (view_of(current), view_of(proposed));
    let mut orphans: Vec<Orphan> = announced
        .into_iter()
        .filter_map(|(service, ips)| {
            let pool = current.pool_for(ips).map(|p| p.name.clone());
            let loss = match proposed.pool_for(ips) {
                None => Loss::Pool,
                Some(p) if proposed.advertisements_for_pool(&p.name).next().is_none() => {
                    Loss::Advertisement
                }
                Some(_) => return None,
            };
            Some(Orphan {
                service,
                ips: ips.to_vec(),
                loss,
                pool,
            })
        })
        .collect();
    if orphans.is_empty() {
        return Ok(());
    }
    orphans.sort_by(|a, b| a.service.cmp(&b.service));
    Err(Refusal { orphans })
}

/// IPAddressPools and L2Advertisements, as a source sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Configuration {
    pub pools: Vec<IpAddressPool>,
    pub advertisements: Vec<L2Advertisement>,
}

/// Keeps the refused configuration and why, while the refusal stands.
#[derive(Debug, Default)]
pub struct ConfigGuard {
    refused: Option<(Refusal, Configuration)>,
}

impl ConfigGuard {
    /// [`check`]s `proposed` against `current` and what is announced:
    /// `Some` to apply it, `None` to keep `current` (the refusal is kept,
    /// with `proposed`, for [`Self::take_refused`] and [`Self::newest`]).
    pub fn propose<'a>(
        &mut self,
        options: &ElectionOptions,
        current: (&[IpAddressPool], &[L2Advertisement]),
        proposed: Configuration,
        announced: impl IntoIterator<Item = (String, &'a [IpAddr])>,
    ) -> Option<Configuration> {
        let outcome = check(
            options,
            current,
            (&proposed.pools, &proposed.advertisements),
            announced,
        );
        match outcome {
            Ok(()) => {
                self.refused = None;
                Some(proposed)
            }
            Err(refusal) => {
                self.refused = Some((refusal, proposed));
                None
            }
        }
    }

    /// The refusal in force: the running configuration is stale.
    pub fn refused(&self) -> Option<&Refusal> {
        self.refused.as_ref().map(|(refusal, _)| refusal)
    }

    /// The newest configuration the source sent, if it was refused: a
    /// source that sends pools and advertisements apart (Kubernetes) builds
    /// on it, not on the stale one in use.
    pub fn newest(&self) -> Option<&Configuration> {
        self.refused.as_ref().map(|(_, proposed)| proposed)
    }

    /// The refused configuration, to propose again (MetalLB retries a
    /// refused configuration; here, once the services may have changed).
    pub fn take_refused(&mut self) -> Option<Configuration> {
        self.refused.take().map(|(_, proposed)| proposed)
    }
}

/// Why the running configuration is stale, by cause, shared by the sources
/// (a file that cannot be read) and the daemon (a refused configuration);
/// sets `metallb_k8s_client_config_stale_bool` while any cause stands and
/// is shown by `/readyz`. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Staleness {
    causes: Arc<Mutex<BTreeMap<StaleCause, String>>>,
    gauge: Gauge,
}

/// Who reported a stale configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StaleCause {
    /// The source could not read or parse its input.
    Source,
    /// The configuration read would orphan announced IPs.
    Refused,
}

impl Staleness {
    pub fn new(gauge: Gauge) -> Self {
        Staleness {
            causes: Arc::default(),
            gauge,
        }
    }

    /// Sets (`Some`) or clears one cause; logs a refusal when its reason
    /// changes, and the recovery once no cause stands.
    pub fn set(&self, cause: StaleCause, reason: Option<String>) {
        let mut causes = self.causes.lock().unwrap_or_else(|e| e.into_inner());
        let before = causes.get(&cause).cloned();
        match &reason {
            Some(reason) => {
                causes.insert(cause, reason.clone());
            }
            None => {
                causes.remove(&cause);
            }
        }
        self.gauge.set(i64::from(!causes.is_empty()));
        let stale = !causes.is_empty();
        drop(causes);
        match (before, reason) {
            // A source logs its own read errors.
            (_, Some(_)) if cause == StaleCause::Source => {}
            (before, Some(reason)) if before.as_ref() != Some(&reason) => error!(
                event = "configStale",
                reason, "configuration not applied, running on the last good one: {reason}"
            ),
            (Some(_), None) if !stale => {
                info!(
                    event = "configRecovered",
                    "configuration applied, no longer stale"
                )
            }
            _ => {}
        }
    }

    /// Every standing reason, one per line; empty when not stale.
    pub fn reasons(&self) -> Vec<String> {
        self.causes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{
        cluster::{self, Change, ServiceKey},
        daemon::reconciler::Reconciler,
        election::{Labels, Membership},
    };

    fn pool(name: &str, range: &str) -> IpAddressPool {
        IpAddressPool::new(name, "metallb-system", Labels::default(), &[range]).unwrap()
    }

    fn ad_for(name: &str, pools: &[&str]) -> L2Advertisement {
        L2Advertisement {
            name: name.into(),
            namespace: "metallb-system".into(),
            ip_address_pools: pools.iter().map(|p| p.to_string()).collect(),
            ..L2Advertisement::default()
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn decide(
        current: (&[IpAddressPool], &[L2Advertisement]),
        proposed: (&[IpAddressPool], &[L2Advertisement]),
        announced: &[(&str, Vec<IpAddr>)],
    ) -> Result<(), Refusal> {
        check(
            &ElectionOptions::default(),
            current,
            proposed,
            announced
                .iter()
                .map(|(s, ips)| (s.to_string(), ips.as_slice())),
        )
    }

    #[test]
    fn a_pool_holding_announced_ips_cannot_go() {
        let web = [("default/web", vec![ip("192.0.2.100")])];
        let pools = [
            pool("lab", "192.0.2.100/30"),
            pool("spare", "198.51.100.0/24"),
        ];
        let ads = [ad_for("all", &[])];
        // Removing the unused pool is fine; removing the used one is not.
        assert_eq!(decide((&pools, &ads), (&pools[..1], &ads), &web), Ok(()));
        let refusal = decide((&pools, &ads), (&pools[1..], &ads), &web).unwrap_err();
        assert_eq!(
            refusal.orphans,
            [Orphan {
                service: "default/web".into(),
                ips: vec![ip("192.0.2.100")],
                loss: Loss::Pool,
                pool: Some("lab".into()),
            }]
        );
        assert_eq!(
            refusal.to_string(),
            "default/web announces 192.0.2.100 of pool lab, which no IPAddressPool would hold"
        );
        // A pool narrowed past the IP counts as gone; nothing announced,
        // nothing to protect.
        let narrowed = [pool("lab", "192.0.2.101/32")];
        assert!(decide((&pools, &ads), (&narrowed, &ads), &web).is_err());
        assert_eq!(decide((&pools, &ads), (&[], &[]), &[]), Ok(()));
    }

    #[test]
    fn the_last_advertisement_of_an_announced_pool_cannot_go() {
        let web = [("default/web", vec![ip("192.0.2.100")])];
        let pools = [pool("lab", "192.0.2.100/30")];
        let two = [ad_for("a", &["lab"]), ad_for("b", &["lab"])];
        assert_eq!(decide((&pools, &two), (&pools, &two[..1]), &web), Ok(()));
        let other = [ad_for("c", &["elsewhere"])];
        let refusal = decide((&pools, &two), (&pools, &other), &web).unwrap_err();
        assert_eq!(refusal.orphans[0].loss, Loss::Advertisement);
    }

    #[test]
    fn a_long_refusal_stays_one_line() {
        let pools = [pool("lab", "192.0.2.0/24")];
        let ads = [ad_for("all", &[])];
        let announced: Vec<(String, Vec<IpAddr>)> = (1..=5)
            .map(|i| (format!("default/s{i}"), vec![ip(&format!("192.0.2.{i}"))]))
            .collect();
        let refusal = check(
            &ElectionOptions::default(),
            (&pools, &ads),
            (&[], &ads),
            announced.iter().map(|(s, ips)| (s.clone(), ips.as_slice())),
        )
        .unwrap_err();
        let text = refusal.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.ends_with("; and 2 more services"), "{text}");
    }

    #[test]
    fn the_guard_keeps_a_refused_configuration_until_a_good_one() {
        let options = ElectionOptions::default();
        let web = [("default/web".to_owned(), vec![ip("192.0.2.100")])];
        let announced = || web.iter().map(|(s, ips)| (s.clone(), ips.as_slice()));
        let good = Configuration {
            pools: vec![pool("lab", "192.0.2.100/30")],
            advertisements: vec![ad_for("all", &[])],
        };
        let no_pool = Configuration {
            pools: Vec::new(),
            ..good.clone()
        };
        let current = (&good.pools[..], &good.advertisements[..]);
        let mut guard = ConfigGuard::default();
        assert_eq!(
            guard.propose(&options, current, good.clone(), announced()),
            Some(good.clone())
        );
        assert_eq!(
            guard.propose(&options, current, no_pool.clone(), announced()),
            None
        );
        assert_eq!(guard.refused().unwrap().orphans[0].loss, Loss::Pool);
        assert_eq!(guard.newest(), Some(&no_pool));
        assert_eq!(guard.take_refused(), Some(no_pool));
        assert!(guard.refused().is_none());
        guard.propose(&options, current, Configuration::default(), announced());
        assert_eq!(
            guard.propose(&options, current, good.clone(), announced()),
            Some(good)
        );
        assert!(guard.refused().is_none() && guard.newest().is_none());
    }

    #[test]
    fn staleness_sets_the_gauge_while_any_cause_stands() {
        let gauge = Gauge::default();
        let stale = Staleness::new(gauge.clone());
        stale.set(StaleCause::Source, Some("file empty".into()));
        stale.set(StaleCause::Refused, Some("orphans".into()));
        assert_eq!(gauge.get(), 1);
        assert_eq!(stale.reasons(), ["file empty", "orphans"]);
        stale.set(StaleCause::Source, None);
        assert_eq!(gauge.get(), 1);
        stale.set(StaleCause::Refused, None);
        assert_eq!(gauge.get(), 0);
        assert!(stale.reasons().is_empty());
    }

    // Through the reconciler, which both sources feed.

    fn iris() -> cluster::ClusterState {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/iris-regression.yaml");
        cluster::load(&path).expect("the example loads")
    }

    fn owned(r: &Reconciler) -> Vec<IpAddr> {
        r.owned().keys().copied().collect()
    }

    #[test]
    fn deleting_the_pool_of_an_announced_ip_keeps_it_until_fixed() {
        let mut r = Reconciler::new("iris1", ElectionOptions::default(), Membership::Disabled);
        r.apply(Change::Reset(iris()));
        assert_eq!(owned(&r), [ip("192.0.2.100")]);

        // The kube source's way: the pool list without it.
        let changes = r.apply(Change::Pools(Vec::new()));
        assert!(changes.is_empty(), "nothing withdrawn: {changes:?}");
        assert_eq!(owned(&r), [ip("192.0.2.100")]);
        assert_eq!(r.stale_config().unwrap().orphans[0].loss, Loss::Pool);

        // An advertisement change meanwhile is judged with the pending pools.
        let ads = r.view().advertisements().to_vec();
        r.apply(Change::Advertisements(ads));
        assert!(r.stale_config().is_some());
        assert_eq!(owned(&r), [ip("192.0.2.100")]);

        // The pool back: applied, not stale.
        let pools = iris().pools;
        r.apply(Change::Pools(pools));
        assert!(r.stale_config().is_none());
        assert_eq!(owned(&r), [ip("192.0.2.100")]);
    }

    #[test]
    fn the_file_source_way_and_a_service_leaving_with_its_pool() {
        let mut r = Reconciler::new("iris1", ElectionOptions::default(), Membership::Disabled);
        r.apply(Change::Reset(iris()));
        // The whole file again, without the advertisement.
        let mut without_ad = iris();
        without_ad.advertisements.clear();
        assert!(r.apply(Change::Reset(without_ad)).is_empty());
        assert_eq!(
            r.stale_config().unwrap().orphans[0].loss,
            Loss::Advertisement
        );
        assert_eq!(owned(&r), [ip("192.0.2.100")]);

        // The pool refused while the Service stands; deleting the Service
        // lets the pending configuration in.
        let mut without_pool = iris();
        without_pool.pools.clear();
        r.apply(Change::Reset(without_pool));
        assert!(r.stale_config().is_some());
        let changes = r.apply(Change::ServiceDeleted(ServiceKey::new("default", "web")));
        assert!(r.stale_config().is_none());
        assert!(r.view().pools().is_empty());
        assert!(owned(&r).is_empty());
        assert_eq!(changes.len(), 1, "{changes:?}");

        // Pool and Service removed in one edit: nothing is orphaned.
        let mut r = Reconciler::new("iris1", ElectionOptions::default(), Membership::Disabled);
        r.apply(Change::Reset(iris()));
        let mut neither = iris();
        neither.pools.clear();
        neither.services.clear();
        r.apply(Change::Reset(neither));
        assert!(r.stale_config().is_none());
        assert!(owned(&r).is_empty());
    }

    #[test]
    fn what_this_node_does_not_announce_is_not_protected() {
        let mut r = Reconciler::new("iris2", ElectionOptions::default(), Membership::Disabled);
        r.apply(Change::Reset(iris()));
        assert!(owned(&r).is_empty());
        r.apply(Change::Pools(Vec::new()));
        assert!(r.stale_config().is_none());
        assert_eq!(r.view().pools().len(), 0);
    }
}
