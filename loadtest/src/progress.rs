//! The once-a-second progress line on stderr.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::runner::Collector;

/// Width of the progress bar in characters.
const BAR_WIDTH: usize = 24;

/// Prints a progress bar line every second until aborted: elapsed time, phase, requests done so far
/// (warm-up included), the last second's rate, requests in flight, and the measured p99 so far.
pub async fn report_every_second(
    collector: Arc<Collector>,
    start: Instant,
    total: Duration,
    warmup: Duration,
    phases: Vec<String>,
) {
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut last_done = 0u64;
    loop {
        tick.tick().await;
        let live = &collector.live;
        let (ok, failed) = (live.ok.load(Ordering::Relaxed), live.failed.load(Ordering::Relaxed));
        let done = ok + failed;
        let phase = live.phase.load(Ordering::Relaxed) as usize;
        let phase_text = if phases.len() > 1 {
            format!(" | phase {}/{} {}", phase + 1, phases.len(), phases.get(phase).map_or("", String::as_str))
        } else {
            String::new()
        };
        let p99 = if start.elapsed() < warmup {
            "- (warm-up)".to_string()
        } else {
            collector.p99_ms().map_or_else(|| "-".to_string(), |p| format!("{p:.2} ms"))
        };
        let frac = (start.elapsed().as_secs_f64() / total.as_secs_f64().max(1e-9)).clamp(0.0, 1.0);
        let filled = (frac * BAR_WIDTH as f64).round() as usize;
        let bar = format!("{}{}", "#".repeat(filled), ".".repeat(BAR_WIDTH - filled.min(BAR_WIDTH)));
        let line = format!(
            "[{bar}] {:>3.0}% {:>4}s/{}s{phase_text} | done {done} (ok {ok}, failed {failed}) | {} req/s | in flight {} | p99 {p99}",
            frac * 100.0,
            start.elapsed().as_secs(),
            total.as_secs(),
            done.saturating_sub(last_done),
            live.in_flight.load(Ordering::Relaxed),
        );
        last_done = done;
        let mut err = std::io::stderr().lock();
        // Progress is best effort: a closed stderr must not stop the run.
        let _ignored = writeln!(err, "{line}");
    }
}
