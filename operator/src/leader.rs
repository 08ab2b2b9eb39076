//! Leader election over a coordination.k8s.io Lease: replicas race to hold the Lease; the
//! holder renews it every few seconds, the others take it over once it has expired. Only the
//! leader runs controllers and the scheduler; a leader that cannot renew in time stops.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub lease_name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

/// What to do with the Lease as observed.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it (or the holder let it expire): take it.
    Take,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds it and it is fresh.
    Wait,
}

/// Pure: the decision for `me` given the Lease's spec at `now`.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Take;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => Decision::Take,
        Some(h) if h == me => Decision::Renew,
        Some(_) => {
            let renewed = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .map(|t| t.0);
            let duration =
                SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
            match renewed {
                Some(t) if t.saturating_add(duration).is_ok_and(|end| end > now) => Decision::Wait,
                _ => Decision::Take,
            }
        }
    }
}

fn spec_for(cfg: &LeaderConfig, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
    let ours = previous.is_some_and(|p| p.holder_identity.as_deref() == Some(&cfg.identity));
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.lease_duration.as_secs().try_into().unwrap_or(15)),
        acquire_time: if ours {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
        ..Default::default()
    }
}

/// One round: returns whether we hold the Lease afterwards. Conflicting writes lose.
pub async fn try_hold(api: &Api<Lease>, cfg: &LeaderConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let current = api.get_opt(&cfg.lease_name).await?;
    let decision = decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        &cfg.identity,
        now,
    );
    if decision == Decision::Wait {
        return Ok(false);
    }
    let result = match current {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.lease_name.clone()),
                    ..Default::default()
                },
                spec: Some(spec_for(cfg, None, now)),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Some(mut lease) => {
            lease.spec = Some(spec_for(cfg, lease.spec.as_ref(), now));
            api.replace(&cfg.lease_name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until this replica holds the Lease.
pub async fn acquire(api: &Api<Lease>, cfg: &LeaderConfig) {
    loop {
        match try_hold(api, cfg).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election: cannot read or write the Lease"),
        }
        tokio::time::sleep(cfg.renew_every).await;
    }
}

/// Renews the Lease until it is lost (or cannot be renewed before it expires); then returns.
pub async fn hold(api: &Api<Lease>, cfg: &LeaderConfig) {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(cfg.renew_every).await;
        match try_hold(api, cfg).await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::error!("leader election: another replica took the Lease");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "leader election: renewing the Lease failed");
                if last_ok.elapsed() >= cfg.lease_duration {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed)),
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        let now = Timestamp::now();
        assert_eq!(decide(None, "a", now), Decision::Take);
        assert_eq!(decide(Some(&spec("a", now)), "a", now), Decision::Renew);
        assert_eq!(decide(Some(&spec("b", now)), "a", now), Decision::Wait);
        let old = now.checked_sub(SignedDuration::from_secs(60)).unwrap();
        assert_eq!(decide(Some(&spec("b", old)), "a", now), Decision::Take);
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "a", now),
            Decision::Take
        );
    }

    #[test]
    fn taking_over_counts_a_transition() {
        let cfg = LeaderConfig {
            lease_name: "l".into(),
            identity: "a".into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        };
        let now = Timestamp::now();
        let theirs = LeaseSpec {
            lease_transitions: Some(3),
            ..spec("b", now)
        };
        assert_eq!(
            spec_for(&cfg, Some(&theirs), now).lease_transitions,
            Some(4)
        );
        let ours = spec_for(&cfg, Some(&theirs), now);
        assert_eq!(spec_for(&cfg, Some(&ours), now).lease_transitions, Some(4));
        assert_eq!(
            spec_for(&cfg, None, now).holder_identity.as_deref(),
            Some("a")
        );
    }
}
