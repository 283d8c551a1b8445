//! Command-line overrides (`sluice serve --http --grpc --admin --ort-lib --test-clock
//! --config-store`). They are
//! written into the raw config after the environment overlay and before validation, so the
//! validator judges the config that will actually run (a `--admin` on a public address without a
//! token is refused by the same rule, naming the same field, as `admin_addr` in the file). The
//! control plane keeps them with the config source and applies them again on every reload.

use std::net::SocketAddr;

use super::raw::RawConfig;

/// Settings given on the command line; each one that is set replaces the config file's key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `server.http_addr`.
    pub http_addr: Option<SocketAddr>,
    /// `server.grpc_addr`.
    pub grpc_addr: Option<SocketAddr>,
    /// `server.admin_addr`.
    pub admin_addr: Option<SocketAddr>,
    /// `runtime.onnxruntime_lib`. Give it absolute: a relative path in the config is resolved
    /// from the config file's directory, while one on the command line means the working
    /// directory.
    pub onnxruntime_lib: Option<String>,
    /// Rollouts run on a clock that `POST /debug/clock` moves (tests only). Not a config key and
    /// nothing to validate: it is carried onto the validated server settings.
    pub test_clock: bool,
    /// `storage.config_store` (`--config-store`).
    pub config_store: Option<String>,
}

impl Overrides {
    /// Writes every override that is set into `raw` (not yet validated).
    pub fn apply(&self, raw: &mut RawConfig) {
        let server = &mut raw.server;
        for (key, value) in [
            (&mut server.http_addr, self.http_addr),
            (&mut server.grpc_addr, self.grpc_addr),
            (&mut server.admin_addr, self.admin_addr),
        ] {
            if let Some(addr) = value {
                *key = Some(addr.to_string());
            }
        }
        if let Some(lib) = &self.onnxruntime_lib {
            raw.runtime.onnxruntime_lib = Some(lib.clone());
        }
        if let Some(store) = &self.config_store {
            raw.storage.config_store = Some(store.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::config::{Config, ConfigError, ConfigIssue};

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    const MLP: &str = "[[models]]\nname = \"mlp\"\nversions = [1]\n";

    fn load(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        Config::from_toml_with(text, "test.toml", &repo(), None, overrides)
    }

    fn issues(r: Result<Config, ConfigError>) -> Vec<ConfigIssue> {
        match r {
            Err(ConfigError::Invalid { issues, .. }) => issues,
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn overrides_replace_the_file_keys_before_validation() {
        let text = format!("[server]\nhttp_addr = \"0.0.0.0:9000\"\n[runtime]\nonnxruntime_lib = \"lib.so\"\n{MLP}");
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let o = Overrides {
            http_addr: Some(any),
            grpc_addr: Some(any),
            admin_addr: Some(any),
            onnxruntime_lib: Some("/opt/ort/libonnxruntime.so".into()),
            test_clock: true,
            config_store: Some("s3://lake/sluice".into()),
        };
        let c = load(&text, &o).unwrap();
        assert_eq!((c.server.http_addr, c.server.grpc_addr, c.server.admin_addr), (any, any, any));
        assert_eq!(c.runtime.onnxruntime_lib.as_deref(), Some(Path::new("/opt/ort/libonnxruntime.so")));
        assert!(c.server.test_clock);
        assert_eq!(c.storage.config_store.map(|l| l.to_string()).as_deref(), Some("s3://lake/sluice"));
        // what the validated config was built from carries them too (reloads compare it)
        assert_eq!(c.raw.server.http_addr.as_deref(), Some("127.0.0.1:0"));
        // unset overrides leave the file alone
        let c = load(&text, &Overrides::default()).unwrap();
        assert_eq!(c.server.http_addr.to_string(), "0.0.0.0:9000");
        assert_eq!(c.runtime.onnxruntime_lib, Some(repo().join("lib.so")));
        assert!(!c.server.test_clock);
    }

    #[test]
    fn an_override_that_makes_the_config_invalid_is_refused_by_the_validator() {
        let public = Overrides { admin_addr: Some("0.0.0.0:0".parse().unwrap()), ..Overrides::default() };
        let found = issues(load(MLP, &public));
        assert!(
            found.iter().any(|i| i.field == "server.admin_token" && i.message.contains("not a loopback")),
            "{found:?}"
        );
        // the same rule as the file key, and a token in the file satisfies it
        let with_token = format!("[server]\nadmin_token = \"0123456789abcdef0123\"\n{MLP}");
        assert_eq!(load(&with_token, &public).unwrap().server.admin_addr.to_string(), "0.0.0.0:0");
    }

    #[test]
    fn an_override_can_make_an_invalid_file_valid() {
        let text = format!("[server]\nadmin_addr = \"0.0.0.0:8002\"\nhttp_addr = \"nowhere\"\n{MLP}");
        let found = issues(load(&text, &Overrides::default()));
        assert!(found.iter().any(|i| i.field == "server.http_addr"), "{found:?}");
        let local = Overrides {
            http_addr: Some("127.0.0.1:0".parse().unwrap()),
            admin_addr: Some("127.0.0.1:0".parse().unwrap()),
            ..Overrides::default()
        };
        let c = load(&text, &local).unwrap();
        assert!(c.server.admin_addr.ip().is_loopback());
    }
}
