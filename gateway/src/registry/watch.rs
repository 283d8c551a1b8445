//! `watch_aliases`: follows the MLflow aliases an endpoint's served entities name.
//!
//! Every `runtime.registry_poll_ms` the replica that leads (a lone gateway always does) reads
//! each watched alias. When it names another version than the one served:
//! - without `alias_rollout`, the entity is changed to the new version at once (a config change
//!   of source `registry`, in the history with the versions it moved between);
//! - with it, the new version joins the endpoint as the served model `<entity_name>-<version>`
//!   at 0% and a guardrailed rollout from the alias entity to it starts. When the rollout is
//!   promoted, the alias entity takes the new version and its traffic and the candidate entity
//!   goes (one change: the endpoint looks as before, one version on). When it is rolled back or
//!   aborted, the candidate entity goes, the old version keeps serving and the version is not
//!   tried again while that rollout is the endpoint's latest; it is logged, and
//!   `sluice_registry_alias_version` differs from `sluice_registry_serving_version`.
//!
//! Nothing is written to the registry.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::mlflow::Client;
use crate::config::raw::{RawEndpoint, RawRoute, RawServedEntity, RawTrafficConfig, RawVersion};
use crate::config::{EndpointConfig, ServedEntity};
use crate::control::{Control, ControlError};
use crate::rollout::Rollouts;
use crate::rollout::state::Phase;

/// Follows the watched aliases until `token` is cancelled.
pub async fn run(control: Arc<Control>, rollouts: Arc<Rollouts>, token: CancellationToken) {
    // (endpoint, served model) -> the version that was refused (not loadable, or rolled back),
    // said once
    let mut refused: HashMap<(String, String), u64> = HashMap::new();
    loop {
        let Some(registry) = control.config().await.runtime.registry.clone() else { return };
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(registry.poll) => {}
        }
        if !control.leadership().is_leader() {
            continue;
        }
        let config = control.config().await;
        let client = match Client::new(&registry.uri) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("MLflow registry: {e}");
                continue;
            }
        };
        for ep in config.endpoints.iter().filter(|e| e.watch_aliases) {
            for s in &ep.served_entities {
                let Some(alias) = s.alias.as_deref() else { continue };
                let labels =
                    [("endpoint", ep.name.clone()), ("served_model", s.name.clone()), ("alias", alias.to_string())];
                let named = match client.alias(&s.model, alias).await {
                    Ok(n) => n,
                    Err(e) => {
                        metrics::counter!(crate::metrics::REGISTRY_POLL_ERRORS_TOTAL, &labels).increment(1);
                        tracing::warn!(endpoint = %ep.name, served_model = %s.name, "MLflow registry: {e}");
                        continue;
                    }
                };
                metrics::gauge!(crate::metrics::REGISTRY_ALIAS_VERSION, &labels).set(named as f64);
                metrics::gauge!(crate::metrics::REGISTRY_SERVING_VERSION, &labels).set(s.version as f64);
                if named == s.version {
                    continue;
                }
                let key = (ep.name.clone(), s.name.clone());
                if refused.get(&key) == Some(&named) {
                    continue;
                }
                match follow(&control, &rollouts, ep, s, alias, named).await {
                    Ok(()) => {}
                    Err(why) => {
                        tracing::error!(
                            endpoint = %ep.name,
                            served_model = %s.name,
                            "MLflow alias @{alias} of '{}' names version {named}; version {} keeps serving: {why}. \
                             The registry is not changed; move the alias to serve another version",
                            s.model,
                            s.version
                        );
                        refused.insert(key, named);
                    }
                }
            }
        }
    }
}

/// Moves the alias entity `s` towards version `named`, one step per poll. `Err`: the version
/// is refused (the reason), not to be tried again while the alias names it.
async fn follow(
    control: &Control,
    rollouts: &Rollouts,
    ep: &EndpointConfig,
    s: &ServedEntity,
    alias: &str,
    named: u64,
) -> Result<(), String> {
    let moved = format!("MLflow alias @{alias} of '{}' moved from version {} to {named}", s.model, s.version);
    let Some(spec) = &ep.alias_rollout else {
        return control
            .registry_update(&ep.name, moved, |cur| with_entity(cur, &s.name, |e| e.resolved_version = Some(named)))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
    };
    let candidate = format!("{}-{named}", s.model);
    let state = rollouts.get(&ep.name).await.ok();
    match state {
        Some(st) if st.phase.is_active() => Ok(()), // this one's or another's: its end comes first
        Some(st) if st.candidate == candidate && st.phase == Phase::Promoted => {
            let why = format!("{moved}: the rollout of '{candidate}' was promoted; '{}' serves it now", s.name);
            control
                .registry_update(&ep.name, why, |cur| fold(cur, &s.name, &candidate, named))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Some(st) if st.candidate == candidate => {
            // rolled back or aborted: the candidate entity goes; the registry is left as it is
            let why = format!("{moved}: the rollout of '{candidate}' ended {:?}; its entity is removed", st.phase);
            let _ = control.registry_update(&ep.name, why, |cur| without(cur, &candidate)).await;
            Err(format!("its rollout ended {:?} ({})", st.phase, st.events.last().map_or("", |e| e.message.as_str())))
        }
        _ => {
            let why = format!("{moved}: '{candidate}' joins at 0% for a rollout");
            let added =
                control.registry_update(&ep.name, why, |cur| with_candidate(cur, &s.name, &candidate, named)).await;
            if let Err(e) = added {
                return Err(match e {
                    ControlError::Conflict(m) => {
                        tracing::info!(endpoint = %ep.name, "alias rollout waits: {m}");
                        return Ok(());
                    }
                    e => e.to_string(),
                });
            }
            rollouts
                .start_rollout(&ep.name, spec.rollout(&candidate, &s.name))
                .await
                .map(|st| tracing::info!(endpoint = %ep.name, candidate = %st.candidate, "{moved}: rollout started"))
                .map_err(|e| format!("the rollout could not start: {e}"))
        }
    }
}

/// The endpoint `cur` with `f` applied to its served entity `name`.
fn with_entity(
    cur: Option<&RawEndpoint>,
    name: &str,
    f: impl FnOnce(&mut RawServedEntity),
) -> Result<RawEndpoint, ControlError> {
    let mut e = cur.cloned().ok_or_else(|| ControlError::NotFound("the endpoint is gone".into()))?;
    let entity = e
        .served_entities
        .iter_mut()
        .find(|x| x.served_name() == name)
        .ok_or_else(|| ControlError::NotFound(format!("served model '{name}' is gone")))?;
    f(entity);
    Ok(e)
}

/// The routes of `e` as written, or the one implied route of a lone entity.
fn routes_of(e: &RawEndpoint) -> Vec<RawRoute> {
    match &e.traffic_config {
        Some(t) => t.routes.clone(),
        None => e
            .served_entities
            .iter()
            .map(|s| RawRoute { served_model_name: s.served_name(), traffic_percentage: 100 })
            .collect(),
    }
}

/// Adds `candidate` (version `named`, run as the alias entity `incumbent` runs) with a 0% route.
fn with_candidate(
    cur: Option<&RawEndpoint>,
    incumbent: &str,
    candidate: &str,
    named: u64,
) -> Result<RawEndpoint, ControlError> {
    let mut e = cur.cloned().ok_or_else(|| ControlError::NotFound("the endpoint is gone".into()))?;
    let entity = e
        .served_entities
        .iter()
        .find(|x| x.served_name() == incumbent)
        .ok_or_else(|| ControlError::NotFound(format!("served model '{incumbent}' is gone")))?;
    if e.served_entities.iter().any(|x| x.served_name() == candidate) {
        return Ok(e);
    }
    let mut c = entity.clone();
    c.name = Some(candidate.to_string());
    c.entity_version = RawVersion::Num(named);
    c.resolved_version = None;
    let mut routes = routes_of(&e);
    routes.push(RawRoute { served_model_name: candidate.to_string(), traffic_percentage: 0 });
    e.traffic_config = Some(RawTrafficConfig { routes });
    e.served_entities.push(c);
    Ok(e)
}

/// After a promotion: the alias entity serves version `named` with the candidate's traffic and
/// the candidate entity goes.
fn fold(
    cur: Option<&RawEndpoint>,
    alias_entity: &str,
    candidate: &str,
    named: u64,
) -> Result<RawEndpoint, ControlError> {
    let mut e = with_entity(cur, alias_entity, |entity| entity.resolved_version = Some(named))?;
    let mut routes = routes_of(&e);
    let moved: i64 = routes.iter().filter(|r| r.served_model_name == candidate).map(|r| r.traffic_percentage).sum();
    routes.retain(|r| r.served_model_name != candidate);
    for r in &mut routes {
        if r.served_model_name == alias_entity {
            r.traffic_percentage = r.traffic_percentage.saturating_add(moved);
        }
    }
    e.traffic_config = Some(RawTrafficConfig { routes });
    e.served_entities.retain(|x| x.served_name() != candidate);
    e.shadow.retain(|x| x.served_model_name != candidate);
    Ok(e)
}

/// The endpoint without the served entity `candidate` (its route, at 0% after a rollback, and
/// any shadow of it go too).
fn without(cur: Option<&RawEndpoint>, candidate: &str) -> Result<RawEndpoint, ControlError> {
    let mut e = cur.cloned().ok_or_else(|| ControlError::NotFound("the endpoint is gone".into()))?;
    if !e.served_entities.iter().any(|x| x.served_name() == candidate) {
        return Ok(e);
    }
    let mut routes = routes_of(&e);
    if routes.iter().any(|r| r.served_model_name == candidate && r.traffic_percentage > 0) {
        return Err(ControlError::Conflict(format!("'{candidate}' still has traffic; it is left in place")));
    }
    routes.retain(|r| r.served_model_name != candidate);
    e.traffic_config = Some(RawTrafficConfig { routes });
    e.served_entities.retain(|x| x.served_name() != candidate);
    e.shadow.retain(|x| x.served_model_name != candidate);
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> RawEndpoint {
        toml::from_str(
            r#"
name = "fraud"
watch_aliases = true
[[served_entities]]
name = "champion"
entity_name = "fraud_classifier"
entity_version = "@champion"
resolved_version = 1
provider = "cpu"
"#,
        )
        .unwrap()
    }

    #[test]
    fn a_candidate_joins_at_zero_and_folds_into_the_alias_entity_on_promotion() {
        let e = endpoint();
        let with = with_candidate(Some(&e), "champion", "fraud_classifier-2", 2).unwrap();
        assert_eq!(with.served_entities.len(), 2);
        let c = &with.served_entities[1];
        assert_eq!(c.entity_version, RawVersion::Num(2));
        assert_eq!(c.provider.as_deref(), Some("cpu"), "the candidate runs as the alias entity does");
        let routes: Vec<_> = with
            .traffic_config
            .as_ref()
            .unwrap()
            .routes
            .iter()
            .map(|r| (r.served_model_name.as_str(), r.traffic_percentage))
            .collect();
        assert_eq!(routes, [("champion", 100), ("fraud_classifier-2", 0)]);
        // added once only
        assert_eq!(with_candidate(Some(&with), "champion", "fraud_classifier-2", 2).unwrap(), with);
        // the rollout promoted: traffic all on the candidate
        let mut promoted = with.clone();
        promoted.traffic_config.as_mut().unwrap().routes[0].traffic_percentage = 0;
        promoted.traffic_config.as_mut().unwrap().routes[1].traffic_percentage = 100;
        let folded = fold(Some(&promoted), "champion", "fraud_classifier-2", 2).unwrap();
        assert_eq!(folded.served_entities.len(), 1);
        assert_eq!(folded.served_entities[0].resolved_version, Some(2));
        assert_eq!(folded.traffic_config.as_ref().unwrap().routes.len(), 1);
        assert_eq!(folded.traffic_config.as_ref().unwrap().routes[0].traffic_percentage, 100);
        // rolled back: the candidate (at 0%) goes, the rest stays
        let back = without(Some(&with), "fraud_classifier-2").unwrap();
        assert_eq!(back.served_entities, e.served_entities);
        assert!(without(Some(&promoted), "fraud_classifier-2").is_err(), "a candidate with traffic stays");
        assert!(with_entity(None, "champion", |_| {}).is_err());
        assert!(with_entity(Some(&e), "nobody", |_| {}).is_err());
    }

    #[test]
    fn served_names_default_as_validation_gives_them() {
        let mut s = endpoint().served_entities.remove(0);
        s.name = None;
        assert_eq!(s.served_name(), "fraud_classifier-champion");
        s.entity_version = RawVersion::Str("3".into());
        assert_eq!(s.served_name(), "fraud_classifier-3");
        s.entity_version = RawVersion::Num(4);
        assert_eq!(s.served_name(), "fraud_classifier-4");
    }
}
