//! `sluice config export|import`: moves a config between a file and a config store, without a
//! gateway. Export writes the store's latest version as TOML; import validates a file and
//! writes it as the store's next version (a create-if-absent: an import that races another
//! change fails and changes nothing). Replicas following the store apply it within their watch
//! interval, each loading its models first; one that cannot keeps serving what it served.

use std::path::Path;
use std::process::ExitCode;

use sluice_tables::{Location, S3Options};

use super::CliError;
use super::args::ConfigCommand;
use crate::config::Config;
use crate::config::history::Source;
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
        ConfigCommand::Export { store, config, output } => {
            let config = config.as_deref().map(|p| load(p, None)).transpose()?;
            let location = location(store.as_deref(), config.as_ref())?;
            let s = ConfigStore::open(&location)?;
            let Some(&n) = s.list().await?.last() else {
                return Err(err(format!("{location} holds no config version yet")));
            };
            let v = s.get(n).await?.ok_or_else(|| err(format!("{location}: version {n} disappeared")))?;
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
        ConfigCommand::Import { file, store, env, reason } => {
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
            Ok(format!(
                "{location}: version {} written from {}; replicas following the store apply it within their \
                 watch interval (server.watch_interval_ms)",
                v.version,
                file.display()
            ))
        }
        _ => Err(err("history, rollback and reload talk to a gateway: see --admin-url")),
    }
}
