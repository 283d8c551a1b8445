//! Progressive delivery: a rollout moves an endpoint's traffic from an incumbent served model
//! to a candidate step by step. A step is held until its interval has passed on the rollout
//! [`Clock`] and the candidate has answered enough requests; then guardrails compare the
//! candidate with the incumbent over the step's window of the inference table
//! ([`guardrails`]). A failed guardrail rolls back to 100% incumbent at once; passing the last
//! step promotes the candidate to 100%. Operators pause, resume and abort. Every traffic change
//! is an entry of the endpoint's config history (source `rollout`), every event goes to the
//! webhook, and the state is persisted ([`state`]) so a restart resumes at the same step.
//!
//! The service polls the config (rollouts declared in `[endpoints.rollout]`) and its rollouts
//! once a second, and at once when a test clock is advanced.

pub mod guardrails;
pub mod shared;
pub mod spec;
pub mod state;
pub mod traffic;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::raw::{RawRoute, RawTrafficConfig};
use crate::config::{Config, EndpointConfig};
use crate::experiment::scan::{self, Query};
use guardrails::Judgement;
use spec::{RawRollout, RolloutSpec};
use state::{Event, Origin, Phase, RolloutState};
pub use traffic::{TrafficControl, TrafficError};

/// Why a rollout call was refused.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The control plane refused a traffic change.
    #[error(transparent)]
    Traffic(#[from] TrafficError),
}

/// The running rollouts of a gateway.
pub struct Rollouts {
    /// The control plane, as far as a rollout needs it (config, traffic changes).
    control: Arc<dyn TrafficControl>,
    /// Webhook deliveries run here (drained on shutdown).
    tasks: TaskTracker,
    clock: Clock,
    dir: PathBuf,
    /// With a config store: the states live there (see [`shared`]), not in `dir`.
    shared: Option<shared::SharedStates>,
    /// Held only to read or change states, never across a table scan: reads of the rollout API
    /// and operator actions answer while a step is judged.
    states: Mutex<BTreeMap<String, RolloutState>>,
    wake: Notify,
    /// Judgement reads take it shared; [`Rollouts::hold_judgements`] takes it exclusively.
    reads: RwLock<()>,
    /// Notified when a judgement read begins, and when its outcome was applied or dropped
    /// (tests).
    read_started: Notify,
    judged: Notify,
}

/// What a progressing rollout needs now (decided under the lock, without reading the table).
enum Due {
    /// The endpoint is gone: abort.
    Removed,
    /// The step is held (why).
    Held(String),
    /// Judge the step over this window of the table.
    Judge(Box<(RolloutSpec, Query)>),
}

impl std::fmt::Debug for Rollouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollouts").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn rfc3339(us: i64) -> String {
    crate::experiment::report::rfc3339(us)
}

/// Routes with `candidate` at `pct`, `incumbent` at the rest and every other route at 0. A
/// candidate that is still a shadow (its shadow step) gets no route at 0%.
fn traffic_at(st: &RolloutState, pct: u32) -> RawTrafficConfig {
    let (incumbent, candidate) = (st.incumbent.as_str(), st.candidate.as_str());
    let mut routes: Vec<RawRoute> = st.base_traffic.as_ref().map(|b| b.routes.clone()).unwrap_or_default();
    let routed = pct > 0 || !st.in_shadow_step();
    for name in [incumbent, candidate] {
        if name == candidate && !routed {
            continue;
        }
        if !routes.iter().any(|r| r.served_model_name == name) {
            routes.push(RawRoute { served_model_name: name.to_string(), traffic_percentage: 0 });
        }
    }
    for r in routes.iter_mut() {
        r.traffic_percentage = if r.served_model_name == candidate {
            i64::from(pct)
        } else if r.served_model_name == incumbent {
            i64::from(100 - pct)
        } else {
            0
        };
    }
    RawTrafficConfig { routes }
}

/// The steps as run: the configured ones, ending at 100, after a shadow step (0) when the
/// candidate starts as a shadow.
fn steps_of(spec: &RolloutSpec, candidate_is_shadow: bool) -> Vec<u32> {
    let mut steps = Vec::new();
    if candidate_is_shadow {
        steps.push(0);
    }
    steps.extend(spec.steps.iter().copied());
    if steps.last() != Some(&100) {
        steps.push(100);
    }
    steps
}

fn view_of(e: &EndpointConfig) -> (Vec<String>, Vec<(String, u32)>, Vec<String>) {
    (
        e.served_entities.iter().map(|s| s.name.clone()).collect(),
        e.routes.iter().map(|r| (r.served_model_name.clone(), r.traffic_percentage)).collect(),
        e.shadows.iter().map(|s| s.served_model_name.clone()).collect(),
    )
}

fn validate_for(raw: &RawRollout, e: &EndpointConfig) -> Result<RolloutSpec, RolloutError> {
    let (served, routes, shadows) = view_of(e);
    let view = spec::EndpointView {
        served: &served,
        routes: &routes,
        shadows: &shadows,
        has_table: e.table.is_some(),
        at_start: true,
    };
    spec::validate(raw, "rollout", view).map_err(|errs| {
        RolloutError::Invalid(errs.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; "))
    })
}

impl Rollouts {
    /// Loads the persisted rollouts under `<data_dir>/_rollouts` and puts the traffic of every
    /// running one back to its step. Call before the listeners are bound.
    pub async fn start(
        control: Arc<dyn TrafficControl>,
        clock: Clock,
        data_dir: PathBuf,
        tasks: TaskTracker,
        shared: Option<shared::SharedStates>,
    ) -> Arc<Rollouts> {
        let dir = data_dir.join("_rollouts");
        let r = Arc::new(Rollouts {
            control,
            tasks,
            clock,
            dir,
            shared,
            states: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
            reads: RwLock::new(()),
            read_started: Notify::new(),
            judged: Notify::new(),
        });
        let mut states = r.states.lock().await;
        if r.shared.is_some() {
            // the store's states; their traffic is in the config store already
            r.sync(&mut states).await;
            r.move_into_store(&mut states).await;
            drop(states);
            return r;
        }
        for mut st in state::load_all(&r.dir) {
            if st.phase.is_active() {
                if let Err(e) = r.put_step_traffic_back(&st, "resumed after a restart").await {
                    tracing::error!(endpoint = %st.endpoint, "cannot resume the rollout: {e}; it is aborted");
                    st.phase = Phase::Aborted;
                    r.event(&mut st, "aborted", format!("could not be resumed after a restart: {e}"), vec![]);
                } else {
                    crate::metrics::rollout_candidate_share(&st.endpoint, st.candidate_percent);
                }
                let _ = r.persist(&mut st).await;
            }
            states.insert(st.endpoint.clone(), st);
        }
        drop(states);
        r
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Puts the traffic of a running rollout's step back (after a restart, or a move into a
    /// config store), as a config change whose reason says `why`.
    async fn put_step_traffic_back(&self, st: &RolloutState, why: &str) -> Result<(), TrafficError> {
        let reason = format!(
            "rollout of '{}' {why} at step {} of {} ({}%)",
            st.candidate,
            st.step + 1,
            st.steps.len(),
            st.candidate_percent
        );
        let drop_shadow = (!st.in_shadow_step()).then(|| st.candidate.clone());
        let traffic = traffic_at(st, st.candidate_percent);
        self.control.rollout_traffic(&st.endpoint, traffic, drop_shadow, reason.clone(), true).await?;
        tracing::info!(endpoint = %st.endpoint, "{reason}");
        Ok(())
    }

    /// A gateway that ran alone kept its rollouts under `<data_dir>/_rollouts`; started with a
    /// config store, it writes each of them into the store as that endpoint's first state
    /// (unless the store has one: the store's wins), puts a running one's traffic back to its
    /// step, and renames the directory `_rollouts.moved` so that this happens once.
    async fn move_into_store(&self, states: &mut BTreeMap<String, RolloutState>) {
        let local = state::load_all(&self.dir);
        if local.is_empty() {
            return;
        }
        // only with a store read that worked: "the store has one already" must be true
        if let Some(shared) = &self.shared
            && let Err(e) = shared.newer(&BTreeMap::new()).await
        {
            tracing::warn!(
                "rollout states under {} not moved (the config store cannot be read: {e}); next start tries again",
                self.dir.display()
            );
            return;
        }
        let mut all_moved = true;
        for mut st in local {
            if states.contains_key(&st.endpoint) {
                tracing::warn!(
                    endpoint = %st.endpoint,
                    "the config store has a rollout of this endpoint already; the one under {} is not moved",
                    self.dir.display()
                );
                continue;
            }
            st.seq = 0;
            if let Err(e) = self.persist(&mut st).await {
                tracing::error!(endpoint = %st.endpoint, "rollout state not moved into the config store: {e}");
                all_moved = false;
                continue;
            }
            if st.phase.is_active() {
                self.control.pin(&st.endpoint, traffic_at(&st, st.candidate_percent));
                if let Err(e) = self.put_step_traffic_back(&st, "moved into the config store").await {
                    tracing::error!(endpoint = %st.endpoint, "the moved rollout's traffic was not put back: {e}");
                }
            }
            tracing::info!(endpoint = %st.endpoint, "rollout state moved from {} into the config store", self.dir.display());
            states.insert(st.endpoint.clone(), st);
        }
        if all_moved {
            let mut moved = self.dir.with_file_name("_rollouts.moved");
            if moved.exists() {
                moved = self.dir.with_file_name(format!("_rollouts.moved.{}", crate::inference_log::now_us()));
            }
            if let Err(e) = std::fs::rename(&self.dir, &moved) {
                tracing::warn!("cannot rename {} to {}: {e}", self.dir.display(), moved.display());
            }
        }
    }

    /// Runs until `token` is cancelled: config-declared rollouts are started and running ones
    /// judged once a second and whenever the clock is advanced.
    pub async fn run(self: Arc<Self>, token: CancellationToken) {
        loop {
            self.tick().await;
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.clock.advanced() => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// The states, after reading what other replicas wrote (with a config store).
    async fn synced(&self) -> tokio::sync::MutexGuard<'_, BTreeMap<String, RolloutState>> {
        let mut states = self.states.lock().await;
        self.sync(&mut states).await;
        states
    }

    /// Reads the states other replicas wrote to the config store since the ones held here, and
    /// holds (or frees) each endpoint's traffic as its state says. Answers the endpoints whose
    /// state changed.
    async fn sync(&self, states: &mut BTreeMap<String, RolloutState>) -> Vec<String> {
        let Some(shared) = &self.shared else { return Vec::new() };
        let known: BTreeMap<String, u64> = states.iter().map(|(k, s)| (k.clone(), s.seq)).collect();
        match shared.newer(&known).await {
            Ok(newer) => newer
                .into_iter()
                .map(|st| {
                    if st.phase.is_active() {
                        self.control.pin(&st.endpoint, traffic_at(&st, st.candidate_percent));
                    } else {
                        self.control.unpin(&st.endpoint);
                    }
                    let name = st.endpoint.clone();
                    states.insert(name.clone(), st);
                    name
                })
                .collect(),
            Err(e) => {
                tracing::warn!("rollouts: cannot read the states in the config store: {e}");
                Vec::new()
            }
        }
    }

    /// The leader puts each endpoint's traffic where its rollout state says, when it is not:
    /// after a state written by another replica (an abort that raced a step) or a step whose
    /// traffic change was not followed by its state.
    async fn reconcile(&self, config: &Config, states: &BTreeMap<String, RolloutState>, changed: &[String]) {
        for st in states.values() {
            if !(st.phase.is_active() || changed.contains(&st.endpoint)) {
                continue;
            }
            let Some(e) = config.endpoint(&st.endpoint) else { continue };
            let want = traffic_at(st, st.candidate_percent);
            if e.raw.traffic_config.as_ref() == Some(&want) {
                continue;
            }
            let drop_shadow = (!st.in_shadow_step()).then(|| st.candidate.clone());
            let reason = format!(
                "rollout of '{}': traffic put back to what its state says ({}%, {:?})",
                st.candidate, st.candidate_percent, st.phase
            );
            let pin = st.phase.is_active();
            if let Err(e) = self.control.rollout_traffic(&st.endpoint, want, drop_shadow, reason, pin).await {
                tracing::error!(endpoint = %st.endpoint, "rollout: cannot put the traffic back to its state: {e}");
            }
        }
    }

    /// Every rollout.
    pub async fn list(&self) -> Vec<RolloutState> {
        self.synced().await.values().cloned().collect()
    }

    /// One endpoint's rollout.
    pub async fn get(&self, endpoint: &str) -> Result<RolloutState, RolloutError> {
        self.synced()
            .await
            .get(endpoint)
            .cloned()
            .ok_or_else(|| RolloutError::NotFound(format!("endpoint '{endpoint}' has no rollout")))
    }

    /// The incumbent of the endpoint's running rollout (the A/B report's default champion).
    pub async fn incumbent_of(&self, endpoint: &str) -> Option<String> {
        self.synced().await.get(endpoint).filter(|s| s.phase.is_active()).map(|s| s.incumbent.clone())
    }

    /// Starts a rollout (refused while another one runs on the endpoint).
    pub async fn start_rollout(&self, endpoint: &str, raw: RawRollout) -> Result<RolloutState, RolloutError> {
        let mut states = self.synced().await;
        self.begin(&mut states, endpoint, raw, Origin::Api).await
    }

    async fn begin(
        &self,
        states: &mut BTreeMap<String, RolloutState>,
        endpoint: &str,
        raw: RawRollout,
        origin: Origin,
    ) -> Result<RolloutState, RolloutError> {
        if let Some(st) = states.get(endpoint)
            && st.phase.is_active()
        {
            return Err(RolloutError::Conflict(format!(
                "endpoint '{endpoint}' already has a rollout of '{}' ({:?}); abort it first",
                st.candidate, st.phase
            )));
        }
        let config = self.control.config().await;
        let e = config
            .endpoint(endpoint)
            .ok_or_else(|| RolloutError::NotFound(format!("unknown endpoint '{endpoint}'")))?;
        let spec = validate_for(&raw, e)?;
        let incumbent = spec
            .incumbent
            .clone()
            .or_else(|| spec::default_incumbent(&view_of(e).1, &spec.candidate))
            .ok_or_else(|| RolloutError::Invalid("no incumbent: name one".into()))?;
        let is_shadow = e.shadows.iter().any(|s| s.served_model_name == spec.candidate);
        let steps = steps_of(&spec, is_shadow);
        let mut st = self.new_state(endpoint, raw, origin, incumbent, steps, e.raw.traffic_config.clone());
        st.seq = states.get(endpoint).map_or(0, |s| s.seq);
        let traffic = traffic_at(&st, st.candidate_percent);
        let drop_shadow = (!st.in_shadow_step() && is_shadow).then(|| st.candidate.clone());
        let msg = format!(
            "rollout of '{}' from '{}' started: steps {:?}, interval {}, step 1 at {}%",
            st.candidate, st.incumbent, st.steps, st.spec.interval, st.candidate_percent
        );
        self.control.rollout_traffic(endpoint, traffic, drop_shadow, msg.clone(), true).await?;
        self.event(&mut st, "started", msg, vec![]);
        self.persist(&mut st).await?;
        states.insert(endpoint.to_string(), st.clone());
        Ok(st)
    }

    /// A rollout at its first step, now.
    fn new_state(
        &self,
        endpoint: &str,
        raw: RawRollout,
        origin: Origin,
        incumbent: String,
        steps: Vec<u32>,
        base_traffic: Option<RawTrafficConfig>,
    ) -> RolloutState {
        let now = self.clock.now_us();
        RolloutState {
            seq: 0,
            endpoint: endpoint.to_string(),
            candidate: raw.candidate.clone(),
            spec: raw,
            origin,
            incumbent,
            phase: Phase::Progressing,
            step: 0,
            candidate_percent: steps.first().copied().unwrap_or(0),
            steps,
            step_started_us: now,
            step_started_wall_us: crate::inference_log::now_us(),
            started: rfc3339(now),
            updated: rfc3339(now),
            waiting: None,
            last_checks: vec![],
            events: vec![],
            base_traffic,
        }
    }

    /// Holds the rollout at its step.
    pub async fn pause(&self, endpoint: &str) -> Result<RolloutState, RolloutError> {
        self.operate(endpoint, |st| match st.phase {
            Phase::Progressing => Ok(Phase::Paused),
            p => Err(RolloutError::Conflict(format!("the rollout is {p:?}, not progressing"))),
        })
        .await
    }

    /// Goes on from the step it was paused at (the step's interval starts again).
    pub async fn resume(&self, endpoint: &str) -> Result<RolloutState, RolloutError> {
        self.operate(endpoint, |st| match st.phase {
            Phase::Paused => Ok(Phase::Progressing),
            p => Err(RolloutError::Conflict(format!("the rollout is {p:?}, not paused"))),
        })
        .await
    }

    /// Stops the rollout and sends all traffic back to the incumbent.
    pub async fn abort(&self, endpoint: &str) -> Result<RolloutState, RolloutError> {
        self.operate(endpoint, |st| {
            if st.phase.is_active() {
                Ok(Phase::Aborted)
            } else {
                Err(RolloutError::Conflict(format!("the rollout is already {:?}", st.phase)))
            }
        })
        .await
    }

    async fn operate<F>(&self, endpoint: &str, f: F) -> Result<RolloutState, RolloutError>
    where
        F: FnOnce(&RolloutState) -> Result<Phase, RolloutError>,
    {
        let mut states = self.synced().await;
        let st = states
            .get_mut(endpoint)
            .ok_or_else(|| RolloutError::NotFound(format!("endpoint '{endpoint}' has no rollout")))?;
        let next = f(st)?;
        match next {
            Phase::Paused => {
                st.phase = Phase::Paused;
                self.event(st, "paused", format!("paused at {}%", st.candidate_percent), vec![]);
            }
            Phase::Progressing => {
                st.phase = Phase::Progressing;
                st.step_started_us = self.clock.now_us();
                st.step_started_wall_us = crate::inference_log::now_us();
                self.event(
                    st,
                    "resumed",
                    format!("resumed at {}%; the step's interval starts again", st.candidate_percent),
                    vec![],
                );
            }
            _ => {
                self.finish(
                    st,
                    Phase::Aborted,
                    "aborted by an operator; all traffic back to the incumbent".into(),
                    vec![],
                )
                .await?;
            }
        }
        self.persist(st).await?;
        self.wake.notify_one();
        Ok(st.clone())
    }

    /// Ends a rollout: promoted (100% candidate) or back to 100% incumbent.
    async fn finish(
        &self,
        st: &mut RolloutState,
        phase: Phase,
        message: String,
        checks: Vec<guardrails::Check>,
    ) -> Result<(), RolloutError> {
        let pct = if phase == Phase::Promoted { 100 } else { 0 };
        let traffic = traffic_at(st, pct);
        let drop_shadow = (pct == 100).then(|| st.candidate.clone());
        let reason = format!("rollout of '{}': {message}", st.candidate);
        self.control.rollout_traffic(&st.endpoint, traffic, drop_shadow, reason, false).await?;
        st.phase = phase;
        st.candidate_percent = pct;
        st.waiting = None;
        let event = match phase {
            Phase::Promoted => "promoted",
            Phase::RolledBack => "rolled_back",
            _ => "aborted",
        };
        self.event(st, event, message, checks);
        Ok(())
    }

    fn event(&self, st: &mut RolloutState, event: &str, message: String, checks: Vec<guardrails::Check>) {
        let now = self.clock.now_us();
        st.updated = rfc3339(now);
        let ev = Event {
            time: rfc3339(now),
            event: event.to_string(),
            candidate_percent: st.candidate_percent,
            message,
            checks,
        };
        tracing::info!(endpoint = %st.endpoint, event, percent = st.candidate_percent, "rollout: {}", ev.message);
        let endpoint = st.endpoint.clone();
        metrics::counter!(crate::metrics::ROLLOUT_EVENTS_TOTAL, "endpoint" => endpoint.clone(), "event" => event.to_string())
            .increment(1);
        crate::metrics::rollout_candidate_share(&endpoint, st.candidate_percent);
        if let Some(url) = st.spec.webhook_url.clone() {
            let body = serde_json::json!({
                "endpoint": st.endpoint,
                "candidate": st.candidate,
                "incumbent": st.incumbent,
                "phase": st.phase,
                "step": st.step + 1,
                "steps": st.steps,
                "event": ev,
            });
            let body = serde_json::to_vec(&body).unwrap_or_default();
            self.tasks.spawn(async move {
                let ok = crate::webhook::post_json(&url, body, "rollout").await;
                let result = if ok { "delivered" } else { "failed" };
                metrics::counter!(crate::metrics::ROLLOUT_NOTIFICATIONS_TOTAL, "endpoint" => endpoint, "result" => result)
                    .increment(1);
            });
        }
        st.events.push(ev);
    }

    /// Saves `st`: to `<data_dir>/_rollouts`, or with a config store as its next change there.
    /// A change another replica wrote first is refused (the state held here is stale: the next
    /// read of the store replaces it).
    async fn persist(&self, st: &mut RolloutState) -> Result<(), RolloutError> {
        let Some(shared) = &self.shared else {
            if let Err(e) = state::save(&self.dir, st) {
                tracing::error!(endpoint = %st.endpoint, "rollout state not saved: {e}");
            }
            return Ok(());
        };
        st.seq += 1;
        match shared.put(st).await {
            Ok(()) => Ok(()),
            Err(e) => {
                st.seq -= 1;
                tracing::warn!(endpoint = %st.endpoint, "rollout state not written: {e}");
                Err(RolloutError::Conflict(e.to_string()))
            }
        }
    }

    /// Starts config-declared rollouts, then judges every progressing one whose interval has
    /// passed. The table is read without the states lock, on the analysis runtime; the
    /// judgement is applied only if the rollout did not change meanwhile (paused, aborted,
    /// restarted: the next tick looks again).
    pub async fn tick(&self) {
        let config = self.control.config().await;
        let names: Vec<String> = {
            let mut states = self.states.lock().await;
            let changed = self.sync(&mut states).await;
            // of replicas sharing a config store, the leader starts, steps and ends rollouts;
            // the others follow their states (and hold their traffic)
            if !self.control.leads() {
                return;
            }
            if self.shared.is_some() {
                self.reconcile(&config, &states, &changed).await;
            }
            self.start_declared(&config, &mut states).await;
            states.iter().filter(|(_, s)| s.phase == Phase::Progressing).map(|(k, _)| k.clone()).collect()
        };
        for name in names {
            let (snapshot, spec, q) = {
                let mut states = self.states.lock().await;
                let Some(st) = states.get_mut(&name).filter(|s| s.phase == Phase::Progressing) else { continue };
                let before = st.clone();
                let due = self.due(&config, st);
                let judge = match due {
                    Ok(Due::Judge(j)) => Some(*j),
                    Ok(Due::Removed) => {
                        st.phase = Phase::Aborted;
                        self.control.unpin(&st.endpoint);
                        self.event(st, "aborted", "the endpoint was removed".into(), vec![]);
                        None
                    }
                    Ok(Due::Held(why)) => {
                        st.waiting = Some(why);
                        None
                    }
                    Err(e) => {
                        self.judge_failed(&name, st, &e);
                        None
                    }
                };
                match judge {
                    Some((spec, q)) => (before, spec, q),
                    None => {
                        // Written when something changed, not on every tick.
                        if *st != before {
                            let _ = self.persist(st).await;
                        }
                        continue;
                    }
                }
            };
            let data = self.read(q).await;
            let mut states = self.states.lock().await;
            if let Some(st) = states.get_mut(&name).filter(|st| **st == snapshot) {
                let result = match data {
                    Ok(data) => self.step(&spec, st, &data).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    self.judge_failed(&name, st, &e);
                }
                if *st != snapshot {
                    let _ = self.persist(st).await;
                }
            }
            drop(states);
            self.judged.notify_waiters();
        }
    }

    fn judge_failed(&self, name: &str, st: &mut RolloutState, e: &RolloutError) {
        let why = format!("could not be judged: {e}");
        if st.waiting.as_deref() != Some(why.as_str()) {
            tracing::error!(endpoint = %name, "rollout step failed: {e}");
        }
        st.waiting = Some(why);
    }

    /// The step's window of the table, read on the analysis runtime.
    async fn read(&self, q: Query) -> Result<scan::Scan, RolloutError> {
        self.read_started.notify_waiters();
        let _shared = self.reads.read().await;
        crate::analysis::run("rollout_judgement", async move { scan::scan(&q).await })
            .await
            .map_err(|e| RolloutError::Invalid(e.to_string()))?
            .map_err(|e| RolloutError::Invalid(e.to_string()))
    }

    /// Holds every judgement at its table read until the guard is dropped (tests: a judgement
    /// as slow as one wants). [`Rollouts::read_started`] says when one is waiting.
    #[doc(hidden)]
    pub async fn hold_judgements(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.reads.write().await
    }

    /// Resolves when a judgement's table read begins (create it before the judgement is due).
    #[doc(hidden)]
    pub fn read_started(&self) -> tokio::sync::futures::Notified<'_> {
        self.read_started.notified()
    }

    /// Resolves when a judgement read's outcome has been applied, or dropped because the
    /// rollout changed during the read.
    #[doc(hidden)]
    pub fn judged(&self) -> tokio::sync::futures::Notified<'_> {
        self.judged.notified()
    }

    async fn start_declared(&self, config: &Config, states: &mut BTreeMap<String, RolloutState>) {
        for e in &config.endpoints {
            let Some(spec) = &e.rollout else { continue };
            match states.get(&e.name) {
                Some(st) if st.phase.is_active() || st.spec == spec.raw => continue,
                _ => {}
            }
            match self.begin(states, &e.name, spec.raw.clone(), Origin::Config).await {
                Ok(_) => {}
                Err(err) => {
                    // Remember the refusal so it is not retried every second.
                    tracing::error!(endpoint = %e.name, "the configured rollout cannot start: {err}");
                    let incumbent = spec.incumbent.clone().unwrap_or_default();
                    let base = e.raw.traffic_config.clone();
                    let mut st = self.new_state(&e.name, spec.raw.clone(), Origin::Config, incumbent, vec![0], base);
                    st.phase = Phase::Aborted;
                    self.event(&mut st, "aborted", format!("could not start: {err}"), vec![]);
                    st.seq = states.get(&e.name).map_or(0, |s| s.seq);
                    let _ = self.persist(&mut st).await;
                    states.insert(e.name.clone(), st);
                }
            }
        }
    }

    /// Whether one progressing rollout's step is due, and the read that judges it.
    fn due(&self, config: &Config, st: &RolloutState) -> Result<Due, RolloutError> {
        let Some(e) = config.endpoint(&st.endpoint) else {
            return Ok(Due::Removed);
        };
        let Some(table) = &e.table else {
            return Err(RolloutError::Invalid("the endpoint has no inference table".into()));
        };
        let spec = spec::parse(&st.spec, "rollout").map_err(|errs| RolloutError::Invalid(format!("{errs:?}")))?;
        let now = self.clock.now_us();
        let interval_us = i64::try_from(spec.interval.as_micros()).unwrap_or(i64::MAX);
        if now - st.step_started_us < interval_us {
            return Ok(Due::Held(format!(
                "step {} of {} ({}%) is held until {}",
                st.step + 1,
                st.steps.len(),
                st.candidate_percent,
                rfc3339(st.step_started_us.saturating_add(interval_us))
            )));
        }
        let wall = crate::inference_log::now_us();
        let q = Query {
            table_dir: table.dir.clone(),
            labels_dir: Some(crate::inference_log::labels::dir_of(&table.dir)),
            from_us: st.step_started_wall_us,
            to_us: wall + 1,
            metric: None,
            periods: vec![st.step_started_wall_us],
            bucket_us: 0,
        };
        Ok(Due::Judge(Box::new((spec, q))))
    }

    /// Applies the guardrails' judgement of the step's window `data`.
    async fn step(&self, spec: &RolloutSpec, st: &mut RolloutState, data: &scan::Scan) -> Result<(), RolloutError> {
        match guardrails::judge(spec, &st.incumbent, data, st.in_shadow_step()) {
            Judgement::Waiting(why) => {
                st.waiting = Some(why);
            }
            Judgement::Judged(checks) => {
                st.waiting = None;
                st.last_checks = checks.clone();
                let failed: Vec<String> = checks
                    .iter()
                    .filter(|c| !c.passed)
                    .map(|c| {
                        format!(
                            "{} = {} (limit {})",
                            c.name,
                            c.value.map(|v| format!("{v:.4}")).unwrap_or("?".into()),
                            c.threshold
                        )
                    })
                    .collect();
                if !failed.is_empty() {
                    let msg = format!(
                        "guardrail failed at {}%: {}; all traffic back to '{}'",
                        st.candidate_percent,
                        failed.join(", "),
                        st.incumbent
                    );
                    return self.finish(st, Phase::RolledBack, msg, checks).await;
                }
                if st.step + 1 >= st.steps.len() || st.steps[st.step + 1] == 100 {
                    let msg = format!("every step passed; '{}' now takes all traffic", st.candidate);
                    if st.step + 1 < st.steps.len() {
                        st.step += 1;
                    }
                    return self.finish(st, Phase::Promoted, msg, checks).await;
                }
                let was_shadow = st.in_shadow_step();
                st.step += 1;
                st.candidate_percent = st.steps[st.step];
                let traffic = traffic_at(st, st.candidate_percent);
                let msg = format!(
                    "guardrails passed; step {} of {}: {}% to '{}'",
                    st.step + 1,
                    st.steps.len(),
                    st.candidate_percent,
                    st.candidate
                );
                let drop_shadow = was_shadow.then(|| st.candidate.clone());
                self.control.rollout_traffic(&st.endpoint, traffic, drop_shadow, msg.clone(), true).await?;
                st.step_started_us = self.clock.now_us();
                st.step_started_wall_us = crate::inference_log::now_us();
                self.event(st, "step", msg, checks);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(base: Option<RawTrafficConfig>, steps: Vec<u32>) -> RolloutState {
        RolloutState {
            seq: 0,
            endpoint: "e".into(),
            spec: RawRollout {
                candidate: "b".into(),
                incumbent: None,
                steps: vec![5],
                interval: "1m".into(),
                min_requests: None,
                guardrails: None,
                webhook_url: None,
            },
            origin: Origin::Api,
            candidate: "b".into(),
            incumbent: "a".into(),
            phase: Phase::Progressing,
            step: 0,
            steps,
            candidate_percent: 0,
            step_started_us: 0,
            step_started_wall_us: 0,
            started: String::new(),
            updated: String::new(),
            waiting: None,
            last_checks: vec![],
            events: vec![],
            base_traffic: base,
        }
    }

    #[test]
    fn traffic_moves_between_incumbent_and_candidate_only() {
        let base = RawTrafficConfig {
            routes: vec![
                RawRoute { served_model_name: "a".into(), traffic_percentage: 90 },
                RawRoute { served_model_name: "b".into(), traffic_percentage: 10 },
                RawRoute { served_model_name: "c".into(), traffic_percentage: 0 },
            ],
        };
        let t = traffic_at(&state(Some(base), vec![5, 100]), 25);
        let pct: Vec<i64> = t.routes.iter().map(|r| r.traffic_percentage).collect();
        assert_eq!(pct, vec![75, 25, 0]);
        let t = traffic_at(&state(None, vec![5, 100]), 5);
        assert_eq!(t.routes.len(), 2);
        assert_eq!(t.routes.iter().map(|r| r.traffic_percentage).sum::<i64>(), 100);
        // a candidate in its shadow step gets no route; after it, it keeps one even at 0%
        let mut st = state(None, vec![0, 5, 100]);
        assert_eq!(traffic_at(&st, 0).routes.len(), 1);
        st.step = 1;
        assert_eq!(traffic_at(&st, 0).routes.len(), 2);
    }
}
