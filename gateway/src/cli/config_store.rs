//! `sluice config export|import`: moves a config between a file and a config store, without a
//! gateway. Export writes the store's latest version as TOML; import validates a file and
//! writes it as the store's next version (a create-if-absent: an import that races another
//! change fails and changes nothing). Replicas following the store apply it within their watch
//! interval, each loading its models first; one that cannot keeps serving what it served.

use std::path::Path;
use std::process::ExitCode;

use sluice_tables::{Location, S3Options};

use super::CliError;
use super::args::{ConfigCommand, Output};
use super::render::{shell_word, traffic_cell};
use crate::config::Config;
use crate::config::history::Source;
use crate::config::raw::RawConfig;
use crate::control::store::{ConfigStore, StoreError, Version};

pub fn run(command: ConfigCommand) -> ExitCode {
    let Some(rt) = super::runtime() else { return ExitCode::FAILURE };
    super::table::print_outcome(rt.block_on(go(command)))
}

fn err(e: impl std::fmt::Display) -> CliError {
    CliError::ConfigStore(e.to_string())
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> CliError {
        err(e)
    }
}

/// The store named by `--store` (reached with `config`'s `[storage]` settings when given) or
/// else by `config`'s `storage.config_store`.
fn location(store: Option<&str>, config: Option<&Config>) -> Result<Location, CliError> {
    match (store, config) {
        (Some(s), c) => {
            let options = c
                .map(|c| S3Options {
                    endpoint: c.raw.storage.endpoint.clone(),
                    region: c.raw.storage.region.clone(),
                    allow_http: c.raw.storage.allow_http.unwrap_or(false),
                    ..S3Options::default()
                })
                .unwrap_or_default();
            Location::parse(s, &options).map_err(err)
        }
        (None, Some(c)) => c
            .storage
            .config_store
            .clone()
            .ok_or_else(|| err("no store: give --store, or a config whose [storage] sets config_store")),
        (None, None) => Err(err("no store: give --store (s3://bucket/prefix or a directory)")),
    }
}

fn load(path: &Path, env: Option<&str>) -> Result<Config, CliError> {
    Config::load(path, env).map_err(err)
}

async fn go(command: ConfigCommand) -> Result<String, CliError> {
    match command {
        ConfigCommand::Export { store, config, version, output } => {
            let config = config.as_deref().map(|p| load(p, None)).transpose()?;
            let location = location(store.as_deref(), config.as_ref())?;
            let s = ConfigStore::open(&location)?;
            let n = match version {
                Some(n) => n,
                None => match s.list().await?.last() {
                    Some(&n) => n,
                    None => return Err(err(format!("{location} holds no config version yet"))),
                },
            };
            let v = s.get(n).await?.ok_or_else(|| err(format!("{location} holds no version {n}")))?;
            let by = v.by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default();
            let text = format!(
                "# config store {location}, version {n}: {} {}{by}\n{}",
                v.time,
                v.source.label(),
                toml::to_string_pretty(&v.config).map_err(err)?
            );
            match output {
                Some(p) => {
                    crate::durable::write_atomic(&p, text.as_bytes())
                        .map_err(|e| err(format!("{}: {e}", p.display())))?;
                    Ok(format!("wrote version {n} of {location} to {}", p.display()))
                }
                None => Ok(text.trim_end().to_string()),
            }
        }
        ConfigCommand::Import { file, store, env, reason, output } => {
            let config = load(&file, env.as_deref())?;
            let location = location(store.as_deref(), Some(&config))?;
            let s = ConfigStore::open(&location)?;
            let latest = s.list().await?.last().copied().unwrap_or(0);
            // MLflow aliases resolved here, as the store's latest version has them where it can
            let current = match latest {
                0 => None,
                n => s.get(n).await?.map(|v| v.config),
            };
            let config = crate::registry::mlflow::resolve(config, current.as_ref()).await.map_err(err)?;
            let v = Version {
                version: latest + 1,
                time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                by: std::env::var("USER").ok().filter(|u| !u.is_empty()),
                source: Source::Import,
                reason: Some(reason.unwrap_or_else(|| format!("imported from {}", file.display()))),
                config: config.raw,
            };
            s.put(&v).await?;
            let imported = Imported {
                store: location.to_string(),
                file: file.display().to_string(),
                previous_version: (latest > 0).then_some(latest),
                version: v.version,
                endpoints: endpoint_changes(current.as_ref(), &v.config),
            };
            Ok(match output {
                Output::Json => serde_json::to_string_pretty(&imported).map_err(err)?,
                Output::Table => imported.summary(),
            })
        }
        _ => Err(err("history, rollback and reload talk to a gateway: see --admin-url")),
    }
}

/// What `sluice config import` wrote (its `-o json`).
#[derive(Debug, serde::Serialize)]
struct Imported {
    store: String,
    file: String,
    /// The store's latest version before (none: the store was empty).
    previous_version: Option<u64>,
    version: u64,
    /// The endpoints whose config the import changed, added or removed.
    endpoints: Vec<EndpointChange>,
}

#[derive(Debug, serde::Serialize, PartialEq)]
struct EndpointChange {
    name: String,
    /// `changed`, `added` or `removed`.
    change: &'static str,
    /// The traffic in one cell (`champion=90% challenger=10%`), before and after.
    traffic_before: Option<String>,
    traffic_after: Option<String>,
}

impl Imported {
    /// For a person: the store's version old -> new, a line an endpoint changed, the commands
    /// that put the previous version back.
    fn summary(&self) -> String {
        let mut out = match self.previous_version {
            Some(p) => format!("{}: version {p} -> {} written from {}\n", self.store, self.version, self.file),
            None => {
                format!("{}: version {} (the store's first) written from {}\n", self.store, self.version, self.file)
            }
        };
        if self.endpoints.is_empty() {
            out.push_str("no endpoint changed\n");
        }
        for e in &self.endpoints {
            let (b, a) = (e.traffic_before.as_deref().unwrap_or("-"), e.traffic_after.as_deref().unwrap_or("-"));
            out.push_str(&match e.change {
                "added" => format!("{}: added ({a})\n", e.name),
                "removed" => format!("{}: removed (was {b})\n", e.name),
                _ if a == b => format!("{}: changed (traffic unchanged: {a})\n", e.name),
                _ => format!("{}: {b} -> {a}\n", e.name),
            });
        }
        out.push_str("replicas following the store apply it within their watch interval (server.watch_interval_ms)\n");
        if let Some(p) = self.previous_version {
            let store = shell_word(&self.store);
            out.push_str(&format!(
                "undo: sluice config export --store {store} --version {p} -o v{p}.toml && sluice config import v{p}.toml \
                 --store {store} --reason \"undo version {}\"\n",
                self.version
            ));
        }
        out
    }
}

/// The endpoints whose config differs between `before` (the store's latest version, if any) and
/// `after`, in `after`'s order, then the removed ones.
fn endpoint_changes(before: Option<&RawConfig>, after: &RawConfig) -> Vec<EndpointChange> {
    let json = |e: &crate::config::raw::RawEndpoint| serde_json::to_value(e).unwrap_or_default();
    let old: Vec<(String, serde_json::Value)> =
        before.iter().flat_map(|c| &c.endpoints).map(|e| (e.name.clone(), json(e))).collect();
    let find = |name: &str| old.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let mut changes = Vec::new();
    for e in &after.endpoints {
        let new = json(e);
        let (change, traffic_before) = match find(&e.name) {
            Some(o) if *o == new => continue,
            Some(o) => ("changed", Some(traffic_cell(o))),
            None => ("added", None),
        };
        changes.push(EndpointChange {
            name: e.name.clone(),
            change,
            traffic_before,
            traffic_after: Some(traffic_cell(&new)),
        });
    }
    for (name, o) in old.iter().filter(|(n, _)| !after.endpoints.iter().any(|e| &e.name == n)) {
        changes.push(EndpointChange {
            name: name.clone(),
            change: "removed",
            traffic_before: Some(traffic_cell(o)),
            traffic_after: None,
        });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> RawConfig {
        toml::from_str(text).unwrap()
    }

    const TWO: &str = r#"
[[endpoints]]
name = "fraud"
served_entities = [{ name = "a", entity_name = "m", entity_version = "1" }, { name = "b", entity_name = "m", entity_version = "2" }]
traffic_config = { routes = [{ served_model_name = "a", traffic_percentage = 90 }, { served_model_name = "b", traffic_percentage = 10 }] }

[[endpoints]]
name = "old"
served_entities = [{ name = "x", entity_name = "m", entity_version = "1" }]
"#;

    #[test]
    fn an_import_says_what_it_changed_and_how_to_undo_it() {
        let before = config(TWO);
        let after = config(
            &TWO.replace("traffic_percentage = 90", "traffic_percentage = 50")
                .replace("traffic_percentage = 10", "traffic_percentage = 50")
                .replace("name = \"old\"", "name = \"new\""),
        );
        let changes = endpoint_changes(Some(&before), &after);
        let names: Vec<(&str, &str)> = changes.iter().map(|c| (c.name.as_str(), c.change)).collect();
        assert_eq!(names, [("fraud", "changed"), ("new", "added"), ("old", "removed")]);
        let imported = Imported {
            store: "/srv/my store".into(),
            file: "live.toml".into(),
            previous_version: Some(3),
            version: 4,
            endpoints: changes,
        };
        assert_eq!(
            imported.summary(),
            "/srv/my store: version 3 -> 4 written from live.toml\n\
             fraud: a=90% b=10% -> a=50% b=50%\n\
             new: added (x=100%)\n\
             old: removed (was x=100%)\n\
             replicas following the store apply it within their watch interval (server.watch_interval_ms)\n\
             undo: sluice config export --store '/srv/my store' --version 3 -o v3.toml && sluice config import v3.toml \
             --store '/srv/my store' --reason \"undo version 4\"\n"
        );
        assert!(endpoint_changes(Some(&before), &before).is_empty());
        let first = Imported { previous_version: None, endpoints: vec![], ..imported };
        assert!(!first.summary().contains("undo"), "{}", first.summary());
    }
}
