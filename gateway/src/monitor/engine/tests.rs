//! The monitor's persisted state: saved durably with its previous version, and a torn state file
//! falls back to that version instead of silently recomputing everything and forgetting alerts.

use std::path::Path;

use super::*;

fn monitor(out: &Path) -> Monitor {
    let spec = super::super::spec::validate(&Default::default(), "m", Path::new("."), None).unwrap();
    Monitor::new(spec, out.join("t"), None, out.to_path_buf())
}

fn firing() -> AlertState {
    AlertState { firing: true, value: Some(0.5), window_start: Some(7), since_us: Some(1), ..AlertState::default() }
}

#[test]
fn a_torn_state_file_falls_back_to_the_previous_one() {
    let out = tempfile::tempdir().unwrap();
    let mut m = monitor(out.path());
    m.state_mut().refreshes = 1;
    m.state_mut().alerts.insert("a".into(), firing());
    m.save_state().unwrap();
    m.state_mut().refreshes = 2;
    m.save_state().unwrap();
    assert_eq!(monitor(out.path()).state().refreshes, 2);
    // cut the state file short, as a crash on a disk that lied about a flush could
    let path = m.state_path();
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let resumed = monitor(out.path());
    assert_eq!(resumed.state().refreshes, 1, "the previous good version is used");
    assert_eq!(resumed.state().alerts.get("a"), Some(&firing()), "alert state survives");
    // with no usable version at all, the monitor starts fresh
    std::fs::write(crate::durable::prev_path(&path), b"{").unwrap();
    assert_eq!(monitor(out.path()).state().refreshes, 0);
}
