//! `sluice validate FILE [--env NAME]`: check a config file without serving, the base config and
//! every environment in it (exit 2 when any is invalid).

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;

/// Checks `file`: only environment `env` when given, else the base and every environment.
pub fn validate(file: &Path, env: Option<&str>) -> ExitCode {
    let envs: Vec<Option<String>> = match env {
        Some(e) => vec![Some(e.to_string())],
        None => {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let mut v = vec![None];
            v.extend(Config::environments(&text).unwrap_or_default().into_iter().map(Some));
            v
        }
    };
    let mut ok = true;
    for env in envs {
        let label = env.as_deref().map(|e| format!(" (environment {e})")).unwrap_or_default();
        let checked = Config::load(file, env.as_deref()).map_err(|e| e.to_string()).and_then(|c| {
            let rt = super::runtime().ok_or("cannot start the async runtime")?;
            // aliases resolved, models in object storage or a registry copied and checked first
            rt.block_on(async {
                let c = crate::registry::mlflow::prepare(c, None).await.map_err(|e| e.to_string())?;
                crate::monitor::service::check_offline(&c).await.map_err(|e| e.to_string())?;
                Ok::<_, String>(c)
            })
        });
        match checked {
            Ok(c) => println!(
                "{}{label}: valid ({} model versions, {} endpoints)",
                file.display(),
                c.versions.len(),
                c.endpoints.len()
            ),
            Err(e) => {
                eprintln!("error{label}: {e}");
                ok = false;
            }
        }
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::from(2) }
}
