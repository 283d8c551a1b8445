//! Config as code with environments: a file may carry `[environments.<name>]` tables (dev,
//! staging, prod...) that are deep-merged over the rest of the file when `--env <name>` is given.
//!
//! Merge rules: tables merge key by key; arrays of tables whose entries all have a `name`
//! (models, endpoints, served entities) merge entry by entry on `name`, new names appended;
//! anything else in the overlay replaces the base value.

use toml::{Table, Value};

use super::raw::RawConfig;

/// Why a config text could not be parsed or its environment applied.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// Not TOML, or not the shape of a config (the parser's message, trailing newline trimmed).
    #[error("{}", .0.to_string().trim_end())]
    Toml(#[from] toml::de::Error),
    #[error("unknown environment '{name}'; the file defines {known:?}")]
    UnknownEnvironment { name: String, known: Vec<String> },
    #[error("environments.{name} must be a table")]
    EnvironmentNotTable { name: String },
    #[error("environments must be a table of [environments.<name>] tables")]
    EnvironmentsNotTable,
}

/// Parses TOML, applies environment `env`, and deserialises.
pub fn parse(text: &str, env: Option<&str>) -> Result<RawConfig, OverlayError> {
    let mut table: Table = text.parse()?;
    let envs = take_environments(&mut table)?;
    if let Some(name) = env {
        let overlay = envs.get(name).ok_or_else(|| OverlayError::UnknownEnvironment {
            name: name.to_string(),
            known: envs.keys().cloned().collect(),
        })?;
        let Value::Table(overlay) = overlay else {
            return Err(OverlayError::EnvironmentNotTable { name: name.to_string() });
        };
        merge_tables(&mut table, overlay.clone());
    }
    RawConfig::deserialize_table(table)
}

/// Names of the environments defined in `text`.
pub fn environments(text: &str) -> Result<Vec<String>, OverlayError> {
    let mut table: Table = text.parse()?;
    Ok(take_environments(&mut table)?.keys().cloned().collect())
}

fn take_environments(table: &mut Table) -> Result<Table, OverlayError> {
    match table.remove("environments") {
        None => Ok(Table::new()),
        Some(Value::Table(t)) => Ok(t),
        Some(_) => Err(OverlayError::EnvironmentsNotTable),
    }
}

fn merge_tables(base: &mut Table, overlay: Table) {
    for (k, v) in overlay {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge_tables(b, o),
            (Some(Value::Array(b)), Value::Array(o)) if named(b) && named(&o) => merge_named(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn name_of(v: &Value) -> Option<&str> {
    v.as_table().and_then(|t| t.get("name")).and_then(Value::as_str)
}

fn named(a: &[Value]) -> bool {
    !a.is_empty() && a.iter().all(|v| name_of(v).is_some())
}

fn merge_named(base: &mut Vec<Value>, overlay: Vec<Value>) {
    for o in overlay {
        let name = name_of(&o).map(str::to_string);
        match base.iter_mut().find(|b| name_of(b).map(str::to_string) == name) {
            Some(Value::Table(b)) => {
                if let Value::Table(o) = o {
                    merge_tables(b, o);
                }
            }
            _ => base.push(o),
        }
    }
}

impl RawConfig {
    fn deserialize_table(table: Table) -> Result<RawConfig, OverlayError> {
        use serde::Deserialize;
        Ok(RawConfig::deserialize(Value::Table(table))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
        [server]
        http_addr = "0.0.0.0:8000"
        [[models]]
        name = "a"
        versions = [1]
        [[endpoints]]
        name = "e"
        served_entities = [{ name = "x", entity_name = "a", entity_version = 1 }]

        [environments.prod.server]
        http_addr = "0.0.0.0:80"
        [[environments.prod.models]]
        name = "a"
        versions = [2]
        instances = 4
        [[environments.prod.models]]
        name = "b"
        versions = [1]
        [environments.dev.server]
        admin_addr = "127.0.0.1:9002"
    "#;

    #[test]
    fn overlay_merges_tables_and_named_arrays() {
        let base = parse(TEXT, None).unwrap();
        assert_eq!(base.models.len(), 1);
        let prod = parse(TEXT, Some("prod")).unwrap();
        assert_eq!(prod.server.http_addr.as_deref(), Some("0.0.0.0:80"));
        assert_eq!(prod.models.len(), 2);
        assert_eq!(prod.models[0].versions, vec![2]);
        assert_eq!(prod.models[0].instances, Some(4));
        assert_eq!(prod.endpoints.len(), 1);
        let dev = parse(TEXT, Some("dev")).unwrap();
        assert_eq!(dev.server.http_addr.as_deref(), Some("0.0.0.0:8000"));
        assert_eq!(dev.server.admin_addr.as_deref(), Some("127.0.0.1:9002"));
        let e = parse(TEXT, Some("qa")).unwrap_err().to_string();
        assert!(e.starts_with("unknown environment 'qa'; the file defines ["), "{e}");
        assert!(e.contains("\"prod\"") && e.contains("\"dev\""), "{e}");
        assert!(!parse("x = ", None).unwrap_err().to_string().ends_with('\n'));
        assert_eq!(environments(TEXT).unwrap(), vec!["dev", "prod"]);
    }
}
