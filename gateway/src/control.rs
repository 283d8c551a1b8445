//! The control plane: live config changes (admin API edits, file reloads, rollbacks), each
//! validated, prepared off the request path (new models loaded and warmed), then swapped in
//! atomically; plus each endpoint's numbered config history.
//!
//! Changes are serialised by one lock. A change that fails validation or loading leaves the
//! serving snapshot untouched.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
}

/// Applies config changes to a running gateway.
pub struct Control {
    gateway: Arc<Gateway>,
    state: Mutex<State>,
    source: Option<ConfigSource>,
    tasks: TaskTracker,
    /// The running monitors: config changes restart the ones they touch.
    monitors: Arc<Monitors>,
    /// Traffic held by running rollouts, per endpoint: API edits of it are refused and file
    /// reloads keep it.
    pins: std::sync::Mutex<BTreeMap<String, RawTrafficConfig>>,
    /// Who may call, as the config in force says (a reload rotates tokens).
    access: std::sync::RwLock<Arc<Access>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").field("source", &self.source).finish_non_exhaustive()
    }
}

impl Control {
    /// Starts history at version 1 for every endpoint of the config the gateway started with.
    /// `monitors` were started from that config.
    pub fn new(
        gateway: Arc<Gateway>,
        config: Config,
        source: Option<ConfigSource>,
        tasks: TaskTracker,
        monitors: Arc<Monitors>,
    ) -> Control {
        let time = now_rfc3339();
        let history = config
            .raw
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    vec![HistoryEntry {
                        version: 1,
                        time: time.clone(),
                        source: Source::Startup,
                        reason: None,
                        config: Some(e.clone()),
                    }],
                )
            })
            .collect();
        let file_text = source.as_ref().and_then(|s| std::fs::read_to_string(&s.path).ok());
        let access = std::sync::RwLock::new(Arc::new(Access::of(&config)));
        Control {
            gateway,
            state: Mutex::new(State { config, history, file_text }),
            source,
            tasks,
            monitors,
            pins: std::sync::Mutex::new(BTreeMap::new()),
            access,
        }
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
        self.state.lock().await.config.clone()
    }

    /// Current config version of every endpoint.
    pub async fn versions(&self) -> BTreeMap<String, u64> {
        let st = self.state.lock().await;
        st.history
            .iter()
            .filter_map(|(k, h)| h.last().filter(|e| e.config.is_some()).map(|e| (k.clone(), e.version)))
            .collect()
    }

    pub async fn history(&self, endpoint: &str) -> Result<Vec<HistoryEntry>, ControlError> {
        let st = self.state.lock().await;
        st.history
            .get(endpoint)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(format!("unknown endpoint '{endpoint}'")))
    }

    /// Creates or replaces one endpoint.
    pub async fn put_endpoint(&self, mut endpoint: RawEndpoint) -> Result<u64, ControlError> {
        self.check_pin(&endpoint.name, endpoint.traffic_config.as_ref())?;
        let name = endpoint.name.clone();
        endpoint.name = name.clone();
        self.edit(Source::Api, &name, move |raw| {
            match raw.endpoints.iter_mut().find(|e| e.name == endpoint.name) {
                Some(e) => *e = endpoint,
                None => raw.endpoints.push(endpoint),
            }
            Ok(())
        })
        .await
    }

    /// Replaces an endpoint's traffic routes only.
    pub async fn set_traffic(&self, endpoint: &str, traffic: RawTrafficConfig) -> Result<u64, ControlError> {
        self.check_pin(endpoint, Some(&traffic))?;
        let name = endpoint.to_string();
        self.edit(Source::Api, endpoint, move |raw| {
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
        let version = self
            .edit_with(Source::Rollout, Some(reason), endpoint, move |raw| {
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
    pub async fn delete_endpoint(&self, endpoint: &str) -> Result<u64, ControlError> {
        let name = endpoint.to_string();
        self.edit(Source::Api, endpoint, move |raw| {
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
    pub async fn rollback(&self, endpoint: &str, version: u64) -> Result<u64, ControlError> {
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
        self.edit(Source::Rollback, endpoint, move |raw| {
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
        self.apply_locked(&mut st, new, Source::File, None).await
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
    async fn edit<F>(&self, source: Source, endpoint: &str, f: F) -> Result<u64, ControlError>
    where
        F: FnOnce(&mut RawConfig) -> Result<(), ControlError>,
    {
        self.edit_with(source, None, endpoint, f).await
    }

    async fn edit_with<F>(
        &self,
        source: Source,
        reason: Option<String>,
        endpoint: &str,
        f: F,
    ) -> Result<u64, ControlError>
    where
        F: FnOnce(&mut RawConfig) -> Result<(), ControlError>,
    {
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
        self.apply_locked(&mut st, new, source, reason).await?;
        Ok(st.history.get(endpoint).and_then(|h| h.last()).map(|e| e.version).unwrap_or(0))
    }

    /// Prepares the new snapshot off the request path and swaps it in; records history.
    async fn apply_locked(
        &self,
        st: &mut State,
        mut new: Config,
        source: Source,
        reason: Option<String>,
    ) -> Result<Vec<String>, ControlError> {
        if source == Source::File {
            new = self.keep_pinned(new)?;
        }
        // Listener addresses and limits are fixed at start; keep them, and say so when they changed.
        let kept = ServerKeep::keep(&st.config, &new);
        if source == Source::File && !ServerKeep::same_fixed(&st.config, &new) {
            tracing::warn!(
                "server settings other than default_endpoint and admin_token changed in the config file; they apply after a restart"
            );
        }
        new.server = kept;
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
        self.gateway.swap(snapshot);
        *self.access.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Access::of(&new));
        crate::metrics::config_change(source.label(), "applied");
        self.monitors.reconcile(&new);
        let time = now_rfc3339();
        let mut changed = Vec::new();
        let old: BTreeMap<&str, &RawEndpoint> = st.config.raw.endpoints.iter().map(|e| (e.name.as_str(), e)).collect();
        let new_eps: BTreeMap<&str, &RawEndpoint> = new.raw.endpoints.iter().map(|e| (e.name.as_str(), e)).collect();
        let names: std::collections::BTreeSet<&str> = old.keys().chain(new_eps.keys()).copied().collect();
        for name in names {
            let (before, after) = (old.get(name), new_eps.get(name));
            if before == after {
                continue;
            }
            let h = st.history.entry(name.to_string()).or_default();
            let version = h.last().map(|e| e.version + 1).unwrap_or(1);
            h.push(HistoryEntry {
                version,
                time: time.clone(),
                source,
                reason: reason.clone(),
                config: after.map(|e| (*e).clone()),
            });
            changed.push(name.to_string());
        }
        tracing::info!(source = source.label(), ?changed, "config applied");
        st.config = new;
        Ok(changed)
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
struct ServerKeep;

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
