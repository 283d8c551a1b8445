//! The control plane: live config changes (admin API edits, file reloads, rollbacks), each
//! validated, prepared off the request path (new models loaded and warmed), then swapped in
//! atomically; plus each endpoint's numbered config history.
//!
//! Changes are serialised by one lock. A change that fails validation or loading leaves the
//! serving snapshot untouched.
//!
//! With a config store ([`store`]), each change is written to the store as its next version
//! after it is prepared and before it is swapped in: a change that loses the race for that
//! version is refused (409) and nothing is swapped. Every replica follows the store
//! ([`Control::follow_store`]): versions written by others are validated, prepared and swapped
//! in the same way, and their history is rebuilt from the store at start.

pub mod fleet;
pub mod lease;
pub mod members;
pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::store::{ConfigStore, StoreError};
pub use crate::config::history::{HistoryEntry, Source};
use crate::config::raw::{RawConfig, RawEndpoint, RawTrafficConfig, Secret};
use crate::config::{Config, ConfigError, Overrides};
use crate::core::{BuildError, Gateway, Snapshot};
use crate::monitor::service::Monitors;
use crate::rollout::{TrafficControl, TrafficError};

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the endpoint's state (a running rollout owns its traffic).
    #[error("{0}")]
    Conflict(String),
    #[error("the change was not applied: {0}")]
    Load(#[from] BuildError),
    #[error("{0}")]
    Internal(String),
    /// The config store cannot be reached: nothing was changed.
    #[error("{0}")]
    Store(String),
    /// Not every live replica loaded the new version: nobody routes to it.
    #[error("{0}")]
    NotReady(String),
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> ControlError {
        match e {
            StoreError::Conflict { .. } => ControlError::Conflict(e.to_string()),
            StoreError::TooLarge { .. } => ControlError::Invalid(e.to_string()),
            _ => ControlError::Store(e.to_string()),
        }
    }
}

/// Who made a change, from where, and why.
#[derive(Debug, Clone)]
pub struct Change {
    pub source: Source,
    pub reason: Option<String>,
    pub by: Option<String>,
}

impl Change {
    pub fn new(source: Source, by: Option<String>) -> Change {
        Change { source, reason: None, by }
    }
}

impl From<ConfigError> for ControlError {
    fn from(e: ConfigError) -> ControlError {
        ControlError::Invalid(e.to_string())
    }
}

/// The config file a running gateway was started from, with the environment and command-line
/// overrides it was started with: every reload applies both again.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub env: Option<String>,
    pub overrides: Overrides,
}

impl ConfigSource {
    /// Parses `text` (the file's current content) as the gateway was started: environment
    /// overlay, then the command-line overrides, then validation.
    pub fn parse(&self, text: &str) -> Result<Config, ConfigError> {
        let base = self.path.parent().map(PathBuf::from).unwrap_or_default();
        Config::from_toml_with(text, &self.path.display().to_string(), &base, self.env.as_deref(), &self.overrides)
    }
}

struct State {
    config: Config,
    history: BTreeMap<String, Vec<HistoryEntry>>,
    /// Content of the file at the last (re)load, to notice edits.
    file_text: Option<String>,
    /// The config store's version in force (0: none).
    store_version: u64,
    /// The store's newest version that failed to apply here (warned about once).
    store_failed: Option<u64>,
}

/// What readers see of the state, published after each change: reads never wait for a change
/// in progress (models loading, a fleet waiting for readiness).
struct View {
    config: Config,
    history: BTreeMap<String, Vec<HistoryEntry>>,
    store_version: u64,
}

/// Applies config changes to a running gateway.
pub struct Control {
    gateway: Arc<Gateway>,
    state: Mutex<State>,
    view: std::sync::RwLock<Arc<View>>,
    source: Option<ConfigSource>,
    tasks: TaskTracker,
    /// The running monitors: config changes restart the ones they touch.
    monitors: Arc<Monitors>,
    /// Traffic held by running rollouts, per endpoint: API edits of it are refused and file
    /// reloads keep it.
    pins: std::sync::Mutex<BTreeMap<String, RawTrafficConfig>>,
    /// Who may call, as the config in force says (a reload rotates tokens).
    access: std::sync::RwLock<Arc<Access>>,
    /// The shared config store, when the config lives in one.
    store: Option<ConfigStore>,
    /// Whether this replica leads (always, without a config store).
    leadership: Arc<lease::Leadership>,
    /// This replica's readiness reports to the fleet (with a config store, in `serve`).
    members: std::sync::OnceLock<Arc<members::Members>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").field("source", &self.source).finish_non_exhaustive()
    }
}

impl Control {
    /// Starts history at version 1 for every endpoint of the config the gateway started with,
    /// or, with a config store, rebuilds it from the store's versions (`config` is then the
    /// latest one's, as [`store::open_at_start`] made it). `monitors` were started from `config`.
    pub fn new(
        gateway: Arc<Gateway>,
        config: Config,
        source: Option<ConfigSource>,
        tasks: TaskTracker,
        monitors: Arc<Monitors>,
        store: Option<(ConfigStore, Vec<store::Version>)>,
        leadership: Arc<lease::Leadership>,
    ) -> Control {
        let mut history = BTreeMap::new();
        let mut store_version = 0;
        match &store {
            None => {
                let change = Change::new(Source::Startup, None);
                record(&mut history, &[], &config.raw.endpoints, &now_rfc3339(), &change, None);
            }
            Some((_, versions)) => {
                let mut before: &[RawEndpoint] = &[];
                for v in versions {
                    let change = Change { source: v.source, reason: v.reason.clone(), by: v.by.clone() };
                    record(&mut history, before, &v.config.endpoints, &v.time, &change, Some(v.version));
                    before = &v.config.endpoints;
                    store_version = v.version;
                }
            }
        }
        let file_text = source.as_ref().and_then(|s| std::fs::read_to_string(&s.path).ok());
        let access = std::sync::RwLock::new(Arc::new(Access::of(&config)));
        let view = View { config: config.clone(), history: history.clone(), store_version };
        Control {
            gateway,
            view: std::sync::RwLock::new(Arc::new(view)),
            state: Mutex::new(State { config, history, file_text, store_version, store_failed: None }),
            source,
            tasks,
            monitors,
            pins: std::sync::Mutex::new(BTreeMap::new()),
            access,
            store: store.map(|(s, _)| s),
            leadership,
            members: std::sync::OnceLock::new(),
        }
    }

    /// From now on, a config version is swapped in only once every live replica that reports
    /// to `members` has loaded it ([`members`]).
    pub fn set_members(&self, members: Arc<members::Members>) {
        let _ = self.members.set(members);
    }

    /// Whether this replica leads the fleet (always, without a config store).
    pub fn leadership(&self) -> &Arc<lease::Leadership> {
        &self.leadership
    }

    /// The config store, when the config lives in one.
    pub fn store(&self) -> Option<&ConfigStore> {
        self.store.as_ref()
    }

    /// The config store's version in force (0 without a store).
    pub async fn store_version(&self) -> u64 {
        self.view().store_version
    }

    fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Publishes `st` to readers (after every change).
    fn publish(&self, st: &State) {
        let view = View { config: st.config.clone(), history: st.history.clone(), store_version: st.store_version };
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(view);
    }

    /// The admin token and the `[[auth.tokens]]` principals in force.
    pub fn access(&self) -> Arc<Access> {
        self.access.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The running monitors.
    pub fn monitors(&self) -> &Arc<Monitors> {
        &self.monitors
    }

    /// The config in force.
    pub async fn config(&self) -> Config {
        self.view().config.clone()
    }

    /// Current config version of every endpoint.
    pub async fn versions(&self) -> BTreeMap<String, u64> {
        let st = self.view();
        st.history
            .iter()
            .filter_map(|(k, h)| h.last().filter(|e| e.config.is_some()).map(|e| (k.clone(), e.version)))
            .collect()
    }

    pub async fn history(&self, endpoint: &str) -> Result<Vec<HistoryEntry>, ControlError> {
        let st = self.view();
        st.history
            .get(endpoint)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(format!("unknown endpoint '{endpoint}'")))
    }

    /// Whether the config with `endpoint` created or replaced would be valid (checked as a
    /// change is, models not loaded): the serving-endpoints API refuses a bad request at once
    /// and loads models in the background.
    pub async fn check_endpoint(&self, endpoint: &RawEndpoint) -> Result<(), ControlError> {
        self.check_pin(&endpoint.name, endpoint.traffic_config.as_ref())?;
        let st = self.view();
        let mut raw = st.config.raw.clone();
        match raw.endpoints.iter_mut().find(|e| e.name == endpoint.name) {
            Some(e) => *e = endpoint.clone(),
            None => raw.endpoints.push(endpoint.clone()),
        }
        Config::from_raw(raw, "change", &st.config.base)?;
        Ok(())
    }

    /// Changes one endpoint with `f`, applied to the endpoint as it is when the change is made
    /// (`None`: it does not exist), so that edits made meanwhile through another route are
    /// not undone. `f` answers the endpoint's new config.
    pub async fn update_endpoint<F>(&self, name: &str, by: Option<String>, f: F) -> Result<u64, ControlError>
    where
        F: FnOnce(Option<&RawEndpoint>) -> Result<RawEndpoint, ControlError>,
    {
        self.update_endpoint_as(Change::new(Source::Api, by), name, f).await
    }

    /// An endpoint change the registry's aliases asked for (`watch_aliases`); `reason` goes in
    /// the history.
    pub async fn registry_update<F>(&self, name: &str, reason: String, f: F) -> Result<u64, ControlError>
    where
        F: FnOnce(Option<&RawEndpoint>) -> Result<RawEndpoint, ControlError>,
    {
        let change = Change { source: Source::Registry, reason: Some(reason), by: Some("registry".into()) };
        self.update_endpoint_as(change, name, f).await
    }

    async fn update_endpoint_as<F>(&self, change: Change, name: &str, f: F) -> Result<u64, ControlError>
    where
        F: FnOnce(Option<&RawEndpoint>) -> Result<RawEndpoint, ControlError>,
    {
        let name_owned = name.to_string();
        self.edit(change, name, |raw| {
            let current = raw.endpoints.iter().find(|e| e.name == name_owned);
            let mut endpoint = f(current)?;
            endpoint.name = name_owned.clone();
            self.check_pin(&name_owned, endpoint.traffic_config.as_ref())?;
            match raw.endpoints.iter_mut().find(|e| e.name == name_owned) {
                Some(e) => *e = endpoint,
                None => raw.endpoints.push(endpoint),
            }
            Ok(())
        })
        .await
    }

    /// The tasks of the control plane (background changes are tracked with them).
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Creates or replaces one endpoint (`by`: the caller's principal).
    pub async fn put_endpoint(&self, mut endpoint: RawEndpoint, by: Option<String>) -> Result<u64, ControlError> {
        self.check_pin(&endpoint.name, endpoint.traffic_config.as_ref())?;
        let name = endpoint.name.clone();
        endpoint.name = name.clone();
        self.edit(Change::new(Source::Api, by), &name, move |raw| {
            match raw.endpoints.iter_mut().find(|e| e.name == endpoint.name) {
                Some(e) => *e = endpoint,
                None => raw.endpoints.push(endpoint),
            }
            Ok(())
        })
        .await
    }

    /// Replaces an endpoint's traffic routes only.
    pub async fn set_traffic(
        &self,
        endpoint: &str,
        traffic: RawTrafficConfig,
        by: Option<String>,
    ) -> Result<u64, ControlError> {
        self.check_pin(endpoint, Some(&traffic))?;
        let name = endpoint.to_string();
        self.edit(Change::new(Source::Api, by), endpoint, move |raw| {
            let e = raw
                .endpoints
                .iter_mut()
                .find(|e| e.name == name)
                .ok_or_else(|| ControlError::NotFound(format!("unknown endpoint '{name}'")))?;
            e.traffic_config = Some(traffic);
            Ok(())
        })
        .await
    }

    /// Refuses a traffic change of an endpoint whose traffic a running rollout holds.
    fn check_pin(&self, endpoint: &str, traffic: Option<&RawTrafficConfig>) -> Result<(), ControlError> {
        let pins = self.pins.lock().map_err(|_| ControlError::Internal("rollout pins poisoned".into()))?;
        match pins.get(endpoint) {
            Some(pinned) if Some(pinned) != traffic => Err(ControlError::Conflict(format!(
                "a rollout is moving the traffic of endpoint '{endpoint}'; pause or abort it first \
                 (POST /rollouts/{endpoint}/abort)"
            ))),
            _ => Ok(()),
        }
    }

    /// Sets an endpoint's traffic on behalf of a rollout (taking `drop_shadow` off the shadow
    /// list, for a candidate that leaves its shadow step), recording `reason` in the history.
    /// With `pin`, the rollout holds the traffic from now on (API edits are refused, file
    /// reloads keep it); without, any hold is released.
    pub async fn rollout_traffic(
        &self,
        endpoint: &str,
        traffic: RawTrafficConfig,
        drop_shadow: Option<String>,
        reason: String,
        pin: bool,
    ) -> Result<u64, ControlError> {
        let name = endpoint.to_string();
        let t = traffic.clone();
        let change = Change { source: Source::Rollout, reason: Some(reason), by: None };
        let version = self
            .edit(change, endpoint, move |raw| {
                let e = raw
                    .endpoints
                    .iter_mut()
                    .find(|e| e.name == name)
                    .ok_or_else(|| ControlError::NotFound(format!("unknown endpoint '{name}'")))?;
                e.traffic_config = Some(t);
                if let Some(d) = &drop_shadow {
                    e.shadow.retain(|s| &s.served_model_name != d);
                }
                Ok(())
            })
            .await?;
        if let Ok(mut pins) = self.pins.lock() {
            if pin {
                pins.insert(endpoint.to_string(), traffic);
            } else {
                pins.remove(endpoint);
            }
        }
        Ok(version)
    }

    /// Releases a rollout's hold on an endpoint's traffic.
    pub fn unpin(&self, endpoint: &str) {
        if let Ok(mut pins) = self.pins.lock() {
            pins.remove(endpoint);
        }
    }

    /// Removes an endpoint.
    pub async fn delete_endpoint(&self, endpoint: &str, by: Option<String>) -> Result<u64, ControlError> {
        let name = endpoint.to_string();
        self.edit(Change::new(Source::Api, by), endpoint, move |raw| {
            let before = raw.endpoints.len();
            raw.endpoints.retain(|e| e.name != name);
            if raw.endpoints.len() == before {
                return Err(ControlError::NotFound(format!("unknown endpoint '{name}'")));
            }
            if raw.server.default_endpoint.as_deref() == Some(name.as_str()) {
                raw.server.default_endpoint = None;
            }
            Ok(())
        })
        .await
    }

    /// Puts an endpoint back to the config it had at history version `version`.
    pub async fn rollback(&self, endpoint: &str, version: u64, by: Option<String>) -> Result<u64, ControlError> {
        let target = {
            let st = self.state.lock().await;
            let h = st
                .history
                .get(endpoint)
                .ok_or_else(|| ControlError::NotFound(format!("unknown endpoint '{endpoint}'")))?;
            h.iter()
                .find(|e| e.version == version)
                .ok_or_else(|| {
                    ControlError::NotFound(format!(
                        "endpoint '{endpoint}' has no config version {version}; versions are 1..={}",
                        h.last().map(|e| e.version).unwrap_or(0)
                    ))
                })?
                .config
                .clone()
        };
        let target =
            target.ok_or_else(|| ControlError::Invalid(format!("version {version} of '{endpoint}' is its removal")))?;
        self.check_pin(endpoint, target.traffic_config.as_ref())?;
        self.edit(Change::new(Source::Rollback, by), endpoint, move |raw| {
            match raw.endpoints.iter_mut().find(|e| e.name == target.name) {
                Some(e) => *e = target,
                None => raw.endpoints.push(target),
            }
            Ok(())
        })
        .await
    }

    /// Re-reads the config file and applies it (endpoints and models; server settings other
    /// than the default endpoint and the admin token need a restart).
    pub async fn reload_from_file(&self) -> Result<Vec<String>, ControlError> {
        let src = self
            .source
            .clone()
            .ok_or_else(|| ControlError::Invalid("the gateway was not started from a config file".into()))?;
        let text = tokio::fs::read_to_string(&src.path)
            .await
            .map_err(|e| ControlError::Invalid(format!("cannot read {}: {e}", src.path.display())))?;
        let new = src.parse(&text);
        let mut st = self.state.lock().await;
        st.file_text = Some(text);
        let new = match new {
            Ok(c) => c,
            Err(e) => {
                crate::metrics::config_change("file", "rejected");
                return Err(e.into());
            }
        };
        self.apply_locked(&mut st, new, Change::new(Source::File, None), None).await
    }

    /// Reloads when the file's content changed since the last load; errors are logged.
    async fn reload_if_changed(&self) {
        let Some(src) = &self.source else { return };
        let Ok(text) = tokio::fs::read_to_string(&src.path).await else { return };
        if self.state.lock().await.file_text.as_deref() == Some(text.as_str()) {
            return;
        }
        match self.reload_from_file().await {
            Ok(changed) => tracing::info!(?changed, "config file changed: reloaded"),
            Err(e) => {
                tracing::error!("config file changed but was not applied; still serving the previous config: {e}")
            }
        }
    }

    /// Polls the config file every `interval` until `token` is cancelled.
    pub async fn watch(self: Arc<Self>, interval: Duration, token: CancellationToken) {
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(interval) => self.reload_if_changed().await,
            }
        }
    }

    /// Applies `f` to a copy of the raw config, then validates, prepares and swaps it in.
    /// Returns the endpoint's new config version.
    async fn edit<F>(&self, change: Change, endpoint: &str, f: F) -> Result<u64, ControlError>
    where
        F: FnOnce(&mut RawConfig) -> Result<(), ControlError>,
    {
        let source = change.source;
        let mut st = self.state.lock().await;
        let mut raw = st.config.raw.clone();
        if let Err(e) = f(&mut raw) {
            crate::metrics::config_change(source.label(), "rejected");
            return Err(e);
        }
        let new = match Config::from_raw(raw, "change", &st.config.base) {
            Ok(c) => c,
            Err(e) => {
                crate::metrics::config_change(source.label(), "rejected");
                return Err(e.into());
            }
        };
        self.apply_locked(&mut st, new, change, None).await?;
        Ok(st.history.get(endpoint).and_then(|h| h.last()).map(|e| e.version).unwrap_or(0))
    }

    /// Applies the versions other replicas wrote to the config store since the one in force
    /// (one swap, to the newest; each version in the history). Answers how many were applied.
    pub async fn sync_store(&self) -> Result<usize, ControlError> {
        let Some(store) = &self.store else { return Ok(0) };
        let from = self.state.lock().await.store_version;
        let mut versions = Vec::new();
        loop {
            match store.get(from + 1 + versions.len() as u64).await {
                Ok(Some(v)) => versions.push(v),
                Ok(None) => break,
                // apply what could be read; the next round reads on
                Err(_) if !versions.is_empty() => break,
                Err(e) => {
                    // the others stop waiting for a version nobody here can read
                    if let (StoreError::Corrupt { .. }, Some(m)) = (&e, self.members.get()) {
                        m.failed(from + 1, &e.to_string()).await;
                    }
                    return Err(e.into());
                }
            }
        }
        let Some(last) = versions.last() else { return Ok(0) };
        let mut st = self.state.lock().await;
        if st.store_version != from {
            // a change made here landed in between: the next round reads on from it
            return Ok(0);
        }
        let raw = store::shared(&st.config.raw, &last.config);
        let applied = match Config::from_raw(raw, &format!("config store version {}", last.version), &st.config.base) {
            Ok(new) => {
                let change = Change { source: last.source, reason: last.reason.clone(), by: last.by.clone() };
                self.apply_locked(&mut st, new, change, Some(&versions)).await.map(|_| ())
            }
            Err(e) => {
                crate::metrics::config_change("store", "rejected");
                Err(e.into())
            }
        };
        if let Err(e) = applied {
            // the others stop waiting for a version this replica cannot load
            if !matches!(e, ControlError::NotReady(_))
                && let Some(m) = self.members.get()
            {
                m.failed(last.version, &e.to_string()).await;
            }
            return Err(e);
        }
        st.store_failed = None;
        Ok(versions.len())
    }

    /// Follows the config store every `interval` until `token` is cancelled. A version that
    /// cannot be applied here (a model that does not load on this machine) is logged once and
    /// tried again each round; the replica keeps serving the config in force meanwhile.
    pub async fn follow_store(self: Arc<Self>, interval: Duration, token: CancellationToken) {
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match self.sync_store().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(versions = n, "config store: applied the versions written by other replicas"),
                Err(e) => {
                    let mut st = self.state.lock().await;
                    let newest = st.store_version + 1;
                    if st.store_failed != Some(newest) {
                        st.store_failed = Some(newest);
                        tracing::error!(
                            "config store: version {newest} was not applied; still serving version {}: {e}",
                            st.store_version
                        );
                    }
                }
            }
        }
    }

    /// Prepares the new snapshot off the request path, writes it to the config store (when
    /// there is one and the change was made here) and swaps it in; records history. `stored`:
    /// the store's versions this change applies (read from the store, not written to it).
    async fn apply_locked(
        &self,
        st: &mut State,
        mut new: Config,
        change: Change,
        stored: Option<&[store::Version]>,
    ) -> Result<Vec<String>, ControlError> {
        let source = change.source;
        let local_file = source == Source::File && stored.is_none();
        if local_file {
            new = self.keep_pinned(new)?;
        }
        // Listener addresses and limits are fixed at start; keep them, and say so when they changed.
        let kept = ServerKeep::keep(&st.config, &new);
        if local_file && !ServerKeep::same_fixed(&st.config, &new) {
            tracing::warn!(
                "server settings other than default_endpoint and admin_token changed in the config file; they apply after a restart"
            );
        }
        new.server = kept;
        // MLflow aliases resolved (kept as the config in force has them), model files copied
        new = match crate::registry::mlflow::prepare(new, Some(&st.config.raw)).await {
            Ok(c) => c,
            Err(e) => {
                crate::metrics::config_change(source.label(), "rejected");
                return Err(ControlError::Invalid(format!("the change was not applied: {e}")));
            }
        };
        let previous = self.gateway.snapshot();
        let tasks = self.tasks.clone();
        let tables = self.gateway.tables().clone();
        let cfg = new.clone();
        let built = tokio::task::spawn_blocking(move || Snapshot::build(&cfg, Some(&previous), &tasks, &tables))
            .await
            .map_err(|e| ControlError::Internal(format!("model loading panicked: {e}")))?;
        let snapshot = match built {
            Ok(s) => s,
            Err(e) => {
                crate::metrics::config_change(source.label(), "rejected");
                return Err(e.into());
            }
        };
        if let Err(e) = crate::monitor::service::check(&new, &snapshot.table_schemas()).await {
            crate::metrics::config_change(source.label(), "rejected");
            return Err(ControlError::Invalid(e.to_string()));
        }
        let time = now_rfc3339();
        // a change made here becomes the store's next version before it serves: of two
        // replicas changing the same version, the one that loses the write changes nothing
        let written = match (&self.store, stored) {
            (Some(store), None) => {
                let v = store::Version {
                    version: st.store_version + 1,
                    time: time.clone(),
                    by: change.by.clone(),
                    source,
                    reason: change.reason.clone(),
                    config: new.raw.clone(),
                };
                if let Err(e) = store.put(&v).await {
                    crate::metrics::config_change(source.label(), "rejected");
                    return Err(e.into());
                }
                if let Err(why) = self.fleet_ready(v.version).await {
                    crate::metrics::config_change(source.label(), "rejected");
                    return Err(self.put_back(st, store, &v, &change, why).await);
                }
                Some(v)
            }
            (Some(store), Some(versions)) => {
                let newest = versions.last().map_or(st.store_version, |v| v.version);
                if let Err(why) = self.fleet_ready(newest).await {
                    crate::metrics::config_change("store", "rejected");
                    // any replica puts the config in force back when the fleet cannot take a
                    // version (the one that wrote it may be gone): one of them wins the write
                    // (only one that served the version before it: it puts back that config)
                    if !matches!(why, members::NotReady::Superseded) && versions.len() == 1 {
                        let back = self.back_version(st, newest, &why, None);
                        match store.put(&back).await {
                            Ok(()) => tracing::error!(
                                "config store version {newest} was not loaded by every replica ({why}); version {} puts back the config in force",
                                back.version
                            ),
                            Err(StoreError::Conflict { .. }) => {}
                            Err(e) => tracing::warn!("putting back the config in force failed: {e}"),
                        }
                    }
                    return Err(ControlError::NotReady(format!(
                        "config store version {newest} is not swapped in here: not every replica loaded it: {why}"
                    )));
                }
                None
            }
            _ => None,
        };
        self.gateway.swap(snapshot);
        *self.access.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Access::of(&new));
        crate::metrics::config_change(if stored.is_some() { "store" } else { source.label() }, "applied");
        self.monitors.reconcile(&new);
        let mut changed = Vec::new();
        match stored {
            Some(versions) => {
                let mut before = st.config.raw.endpoints.clone();
                for v in versions {
                    let c = Change { source: v.source, reason: v.reason.clone(), by: v.by.clone() };
                    let eps = &v.config.endpoints;
                    changed.extend(record(&mut st.history, &before, eps, &v.time, &c, Some(v.version)));
                    before = eps.clone();
                }
                st.store_version = versions.last().map_or(st.store_version, |v| v.version);
            }
            None => {
                let store_version = written.as_ref().map(|v| v.version);
                changed = record(
                    &mut st.history,
                    &st.config.raw.endpoints,
                    &new.raw.endpoints,
                    &time,
                    &change,
                    store_version,
                );
                if let Some(v) = store_version {
                    st.store_version = v;
                }
            }
        }
        changed.sort();
        changed.dedup();
        tracing::info!(source = source.label(), ?changed, "config applied");
        st.config = new;
        self.publish(st);
        if let Some(m) = self.members.get() {
            m.serving(st.store_version).await;
        }
        Ok(changed)
    }

    /// Reports `version` prepared here and waits until every other live replica has loaded
    /// it (at once without fleet membership).
    async fn fleet_ready(&self, version: u64) -> Result<(), members::NotReady> {
        let Some(m) = self.members.get() else { return Ok(()) };
        if let Err(e) = m.prepared(version).await {
            tracing::warn!("fleet membership not written to the config store: {e}");
        }
        m.wait_ready(version).await
    }

    /// The version after `failed` that puts the config in force here back.
    fn back_version(&self, st: &State, failed: u64, why: &members::NotReady, by: Option<String>) -> store::Version {
        store::Version {
            version: failed + 1,
            time: now_rfc3339(),
            by,
            source: Source::Rollback,
            reason: Some(format!(
                "version {failed} was not loaded by every replica ({why}); this version puts back version {}",
                st.store_version
            )),
            config: st.config.raw.clone(),
        }
    }

    /// Version `v`, written here, was not loaded by every replica: writes the config in force
    /// as the next version, so that the fleet stays on it, and records both in the history.
    /// Answers the caller's error.
    async fn put_back(
        &self,
        st: &mut State,
        store: &ConfigStore,
        v: &store::Version,
        change: &Change,
        why: members::NotReady,
    ) -> ControlError {
        let message = format!(
            "the change was not applied: config store version {} was not loaded by every replica, so no replica routes to it: {why}",
            v.version
        );
        if matches!(why, members::NotReady::Superseded) {
            // another replica put the config back already; following the store records it
            return ControlError::NotReady(message);
        }
        let back = self.back_version(st, v.version, &why, change.by.clone());
        match store.put(&back).await {
            Ok(()) => {
                let undo = Change { source: back.source, reason: back.reason.clone(), by: back.by.clone() };
                let (old, new) = (st.config.raw.endpoints.clone(), v.config.endpoints.clone());
                record(&mut st.history, &old, &new, &v.time, change, Some(v.version));
                record(&mut st.history, &new, &old, &back.time, &undo, Some(back.version));
                st.store_version = back.version;
                self.publish(st);
                tracing::error!("{message}; version {} puts back the config in force", back.version);
                if let Some(m) = self.members.get() {
                    m.serving(back.version).await;
                }
                ControlError::NotReady(format!("{message} (version {} puts back the config in force)", back.version))
            }
            Err(e) => {
                // another change came first; following the store sorts it out
                tracing::error!("{message}; putting back the config in force failed: {e}");
                ControlError::NotReady(message)
            }
        }
    }
}

impl Control {
    /// A reloaded file keeps the traffic that running rollouts hold.
    fn keep_pinned(&self, mut new: Config) -> Result<Config, ControlError> {
        let pins = self.pins.lock().map(|p| p.clone()).unwrap_or_default();
        if pins.is_empty() {
            return Ok(new);
        }
        let mut raw = new.raw.clone();
        let mut changed = false;
        for e in raw.endpoints.iter_mut() {
            if let Some(t) = pins.get(&e.name)
                && e.traffic_config.as_ref() != Some(t)
            {
                tracing::warn!(endpoint = %e.name, "config file changes the traffic of an endpoint in a rollout; the rollout keeps it");
                e.traffic_config = Some(t.clone());
                changed = true;
            }
        }
        if changed {
            let base = new.base.clone();
            new = Config::from_raw(raw, "reloaded config with rollout traffic", &base)?;
        }
        Ok(new)
    }
}

/// Who may call: the admin token and the `[[auth.tokens]]` principals of one config.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub admin_token: Option<Secret>,
    pub principals: Arc<crate::auth::Principals>,
}

impl Access {
    fn of(config: &Config) -> Access {
        Access { admin_token: config.server.admin_token.clone(), principals: config.auth.clone() }
    }

    /// Whether a caller must say who it is somewhere (any token configured).
    pub fn any_token(&self) -> bool {
        self.admin_token.is_some() || self.principals.enabled()
    }
}

/// Server settings that a live change may alter: the default endpoint and the admin token.
pub(crate) struct ServerKeep;

impl ServerKeep {
    fn keep(old: &Config, new: &Config) -> crate::config::ServerConfig {
        let mut s = old.server.clone();
        s.default_endpoint = new.server.default_endpoint.clone();
        s.admin_token = new.server.admin_token.clone();
        s
    }

    /// Whether the settings that need a restart are unchanged (comparing what was written).
    fn same_fixed(old: &Config, new: &Config) -> bool {
        let strip = |c: &Config| {
            let mut s = c.raw.server.clone();
            s.default_endpoint = None;
            s.admin_token = None;
            serde_json::to_string(&s).unwrap_or_default()
        };
        strip(old) == strip(new)
    }
}

/// Appends a history entry for each endpoint that differs between `before` and `after`;
/// answers their names.
fn record(
    history: &mut BTreeMap<String, Vec<HistoryEntry>>,
    before: &[RawEndpoint],
    after: &[RawEndpoint],
    time: &str,
    change: &Change,
    store_version: Option<u64>,
) -> Vec<String> {
    let old: BTreeMap<&str, &RawEndpoint> = before.iter().map(|e| (e.name.as_str(), e)).collect();
    let new: BTreeMap<&str, &RawEndpoint> = after.iter().map(|e| (e.name.as_str(), e)).collect();
    let names: std::collections::BTreeSet<&str> = old.keys().chain(new.keys()).copied().collect();
    let mut changed = Vec::new();
    for name in names {
        let (b, a) = (old.get(name), new.get(name));
        if b == a {
            continue;
        }
        let h = history.entry(name.to_string()).or_default();
        let version = h.last().map(|e| e.version + 1).unwrap_or(1);
        h.push(HistoryEntry {
            version,
            time: time.to_string(),
            source: change.source,
            by: change.by.clone(),
            reason: change.reason.clone(),
            store_version,
            config: a.map(|e| (*e).clone()),
        });
        changed.push(name.to_string());
    }
    changed
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A refusal as a rollout sees it: its kind, and the message an editor would get.
impl From<ControlError> for TrafficError {
    fn from(e: ControlError) -> TrafficError {
        let message = e.to_string();
        match e {
            ControlError::Invalid(_) | ControlError::Load(_) => TrafficError::Invalid(message),
            ControlError::NotFound(_) => TrafficError::NotFound(message),
            ControlError::Conflict(_) => TrafficError::Conflict(message),
            ControlError::Internal(_) => TrafficError::Internal(message),
            ControlError::Store(_) | ControlError::NotReady(_) => TrafficError::Unavailable(message),
        }
    }
}

/// Rollouts see the control plane through this trait only.
impl TrafficControl for Control {
    fn config(&self) -> futures::future::BoxFuture<'_, Config> {
        Box::pin(Control::config(self))
    }

    fn rollout_traffic<'a>(
        &'a self,
        endpoint: &'a str,
        traffic: RawTrafficConfig,
        drop_shadow: Option<String>,
        reason: String,
        pin: bool,
    ) -> futures::future::BoxFuture<'a, Result<(), TrafficError>> {
        Box::pin(async move {
            Control::rollout_traffic(self, endpoint, traffic, drop_shadow, reason, pin)
                .await
                .map(|_version| ())
                .map_err(TrafficError::from)
        })
    }

    fn unpin(&self, endpoint: &str) {
        Control::unpin(self, endpoint);
    }

    fn leads(&self) -> bool {
        self.leadership.is_leader()
    }

    fn pin(&self, endpoint: &str, traffic: RawTrafficConfig) {
        if let Ok(mut pins) = self.pins.lock() {
            pins.insert(endpoint.to_string(), traffic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_applies_the_command_line_overrides_again() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let source = ConfigSource {
            path: dir.join("reloaded.toml"),
            env: Some("dev".into()),
            overrides: Overrides {
                http_addr: Some("127.0.0.1:0".parse().unwrap()),
                admin_addr: Some("127.0.0.1:0".parse().unwrap()),
                onnxruntime_lib: Some("/opt/ort/libonnxruntime.so".into()),
                test_clock: true,
                ..Overrides::default()
            },
        };
        // the file (and its environment) say otherwise, before and after an edit
        let text = |versions: &str| {
            format!(
                "[server]\nhttp_addr = \"0.0.0.0:8000\"\n[runtime]\nmodel_repository = \"models\"\n\
                 [[models]]\nname = \"fraud_classifier\"\nversions = {versions}\n\
                 [environments.dev.server]\nadmin_addr = \"0.0.0.0:9002\"\n"
            )
        };
        for versions in ["[1]", "[1, 2]"] {
            let c = source.parse(&text(versions)).unwrap();
            assert_eq!(c.server.http_addr.to_string(), "127.0.0.1:0");
            assert_eq!(c.server.admin_addr.to_string(), "127.0.0.1:0", "the override beats the environment");
            assert_eq!(c.runtime.onnxruntime_lib.as_deref(), Some(std::path::Path::new("/opt/ort/libonnxruntime.so")));
            assert!(c.server.test_clock);
            assert_eq!(c.raw.server.admin_addr.as_deref(), Some("127.0.0.1:0"));
        }
        // an edit made invalid by an override is refused, naming the field
        let public = ConfigSource {
            overrides: Overrides { admin_addr: Some("0.0.0.0:0".parse().unwrap()), ..Overrides::default() },
            ..source
        };
        match public.parse(&text("[1]")) {
            Err(ConfigError::Invalid { issues, .. }) => {
                assert!(issues.iter().any(|i| i.field == "server.admin_token"), "{issues:?}")
            }
            other => panic!("expected the validator to refuse it, got {other:?}"),
        }
    }
}
