//! Finding and loading the ONNX Runtime shared library (ort `load-dynamic`), once per process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use super::RuntimeError;

/// Where `sluice` looks for the library when neither `--ort-lib` nor the config names one.
pub const DEFAULT_RELATIVE_PATH: &str = ".ort/lib/libonnxruntime.so";

/// Environment variable that overrides the library path (same as ort's own convention).
pub const ENV_VAR: &str = "ORT_DYLIB_PATH";

const FIX: &str = "run `scripts/fetch-onnxruntime.sh` from the repository root, or point --ort-lib / \
                   ORT_DYLIB_PATH at a libonnxruntime.so 1.31";

static ENVIRONMENT: OnceLock<Result<(PathBuf, Environment), String>> = OnceLock::new();

/// Picks the library path: explicit path, then `ORT_DYLIB_PATH`, then `.ort/lib/libonnxruntime.so`
/// under the current directory, then the same under the executable's directory and its parents.
pub fn resolve(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os(ENV_VAR).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let cwd_candidate = PathBuf::from(DEFAULT_RELATIVE_PATH);
    if cwd_candidate.exists() {
        return cwd_candidate;
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            let c = dir.join(DEFAULT_RELATIVE_PATH);
            if c.exists() {
                return c;
            }
        }
    }
    cwd_candidate
}

/// Loads the library (first call only) and returns the process-wide ONNX Runtime environment.
/// Later calls return the same environment whatever path they pass.
pub fn environment(explicit: Option<&Path>) -> Result<&'static Environment, RuntimeError> {
    let result = ENVIRONMENT.get_or_init(|| {
        let path = resolve(explicit);
        if !path.exists() {
            return Err(format!("ONNX Runtime library not found at {}: {FIX}", path.display()));
        }
        let builder = ort::init_from(&path)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}; {FIX}", path.display()))?;
        let env = builder
            .with_name("sluice")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))?;
        Ok((path, env))
    });
    match result {
        Ok((_, env)) => Ok(env),
        Err(e) => Err(RuntimeError::Library(e.clone())),
    }
}

/// The path the library was loaded from, once [`environment`] succeeded.
pub fn loaded_path() -> Option<&'static Path> {
    match ENVIRONMENT.get() {
        Some(Ok((p, _))) => Some(p.as_path()),
        _ => None,
    }
}
