//! Recent traffic per endpoint and served model, for the dashboard: requests, errors and a
//! latency histogram per 10-second bucket over the last hour, in fixed memory (about 80 KiB per
//! served model) and without locks on the request path (atomics; a bucket is reset when the
//! ring comes round to it, and a count racing with that reset may be lost, which a dashboard
//! can bear). Percentiles come from log-spaced latency buckets 35% apart, so they are within
//! about 16% of the true value. Counters in `/metrics` stay the exact record.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Width of one bucket.
pub const BUCKET_SECONDS: i64 = 10;
/// Buckets kept (one hour).
const SLOTS: usize = 360;
/// Latency buckets: [0, 0.05 ms), then 0.05 ms * 1.35^k up to about 90 s, then the rest.
const LAT_BUCKETS: usize = 50;
const LAT_FIRST_MS: f64 = 0.05;
const LAT_GROWTH: f64 = 1.35;

struct Slot {
    /// Bucket number (seconds since the epoch / BUCKET_SECONDS) this slot holds.
    epoch: AtomicI64,
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU32; LAT_BUCKETS],
}

impl Slot {
    fn new() -> Slot {
        Slot {
            epoch: AtomicI64::new(i64::MIN),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

struct Series {
    slots: Box<[Slot]>,
}

fn latency_bucket(ms: f64) -> usize {
    if ms.is_nan() || ms < LAT_FIRST_MS {
        return 0;
    }
    let k = ((ms / LAT_FIRST_MS).ln() / LAT_GROWTH.ln()).floor() as usize + 1;
    k.min(LAT_BUCKETS - 1)
}

/// A representative latency of bucket `k` (its geometric middle), ms.
fn bucket_value(k: usize) -> f64 {
    if k == 0 {
        return LAT_FIRST_MS / 2.0;
    }
    LAT_FIRST_MS * LAT_GROWTH.powf(k as f64 - 0.5)
}

impl Series {
    fn new() -> Series {
        Series { slots: (0..SLOTS).map(|_| Slot::new()).collect() }
    }

    fn record(&self, epoch: i64, ok: bool, latency: Duration) {
        let slot = &self.slots[epoch.rem_euclid(SLOTS as i64) as usize];
        let seen = slot.epoch.load(Ordering::Acquire);
        // The first to see a newer bucket resets the slot; an older one is dropped below.
        if seen < epoch && slot.epoch.compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            slot.requests.store(0, Ordering::Relaxed);
            slot.errors.store(0, Ordering::Relaxed);
            for l in &slot.latency {
                l.store(0, Ordering::Relaxed);
            }
        }
        if slot.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        slot.latency[latency_bucket(latency.as_secs_f64() * 1000.0)].fetch_add(1, Ordering::Relaxed);
    }

    fn raw(&self, epoch: i64) -> Option<RawBucket> {
        let slot = &self.slots[epoch.rem_euclid(SLOTS as i64) as usize];
        if slot.epoch.load(Ordering::Acquire) != epoch {
            return None;
        }
        let requests = slot.requests.load(Ordering::Relaxed);
        if requests == 0 {
            return None;
        }
        Some(RawBucket {
            epoch,
            requests,
            errors: slot.errors.load(Ordering::Relaxed),
            latency: slot.latency.iter().map(|c| u64::from(c.load(Ordering::Relaxed))).collect(),
        })
    }
}

/// One bucket's counts, as a replica publishes them for the others (mergeable: counts add).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RawBucket {
    /// Bucket number (seconds since the epoch / [`BUCKET_SECONDS`]).
    pub epoch: i64,
    pub requests: u64,
    pub errors: u64,
    /// Answers per latency bucket.
    pub latency: Vec<u64>,
}

/// One served model's non-empty buckets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RawSeries {
    pub endpoint: String,
    pub served_model: String,
    pub buckets: Vec<RawBucket>,
}

/// A point from (summed) counts.
fn point_of(epoch: i64, b: Option<&RawBucket>) -> Point {
    let mut p = Point { t_ms: epoch * BUCKET_SECONDS * 1000, ..Point::default() };
    let Some(b) = b else { return p };
    p.requests = b.requests;
    p.errors = b.errors;
    let counts = &b.latency;
    let total: u64 = counts.iter().sum();
    if total > 0 {
        let q = |f: f64| {
            let rank = (f * total as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (k, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Some(bucket_value(k.min(LAT_BUCKETS - 1)));
                }
            }
            None
        };
        (p.p50_ms, p.p90_ms, p.p99_ms) = (q(0.5), q(0.9), q(0.99));
    }
    p
}

/// The points of the last `minutes` up to `now_us`, from the raw series of several replicas
/// (the counts of one served model's same bucket add up).
pub fn merge(raws: &[RawSeries], minutes: u32, now_us: i64) -> Vec<SeriesView> {
    let (first, last) = window(minutes, now_us);
    let mut sums: std::collections::BTreeMap<(String, String), std::collections::BTreeMap<i64, RawBucket>> =
        Default::default();
    for r in raws {
        let per = sums.entry((r.endpoint.clone(), r.served_model.clone())).or_default();
        for b in r.buckets.iter().filter(|b| (first..=last).contains(&b.epoch)) {
            let sum = per.entry(b.epoch).or_insert_with(|| RawBucket { epoch: b.epoch, ..RawBucket::default() });
            sum.requests += b.requests;
            sum.errors += b.errors;
            // at most LAT_BUCKETS entries, whatever a published object says
            if sum.latency.len() < b.latency.len().min(LAT_BUCKETS) {
                sum.latency.resize(b.latency.len().min(LAT_BUCKETS), 0);
            }
            for (k, c) in b.latency.iter().take(LAT_BUCKETS).enumerate() {
                sum.latency[k] = sum.latency[k].saturating_add(*c);
            }
        }
    }
    sums.into_iter()
        .map(|((endpoint, served_model), per)| SeriesView {
            endpoint,
            served_model,
            points: (first..=last).map(|epoch| point_of(epoch, per.get(&epoch))).collect(),
        })
        .collect()
}

/// First and last bucket of the last `minutes` (at most 60) up to `now_us`.
fn window(minutes: u32, now_us: i64) -> (i64, i64) {
    let last = now_us.div_euclid(BUCKET_SECONDS * 1_000_000);
    let n = (i64::from(minutes.clamp(1, 60)) * 60 / BUCKET_SECONDS).min(SLOTS as i64 - 1);
    (last - n + 1, last)
}

/// One bucket of one served model.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Point {
    /// Bucket start, ms since the epoch.
    pub t_ms: i64,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The points of one served model.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SeriesView {
    pub endpoint: String,
    pub served_model: String,
    pub points: Vec<Point>,
}

/// Recent traffic of every endpoint and served model that answered.
#[derive(Default)]
pub struct TrafficStats {
    /// Endpoint -> served model -> series (nested so a lookup borrows `&str`s, no allocation).
    series: RwLock<HashMap<String, HashMap<String, Arc<Series>>>>,
}

impl std::fmt::Debug for TrafficStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrafficStats").finish_non_exhaustive()
    }
}

impl TrafficStats {
    /// Records one answer of `served_model` on `endpoint` at `now_us`.
    pub fn record(&self, endpoint: &str, served_model: &str, ok: bool, latency: Duration, now_us: i64) {
        let epoch = now_us.div_euclid(BUCKET_SECONDS * 1_000_000);
        let found = self.series.read().ok().and_then(|m| m.get(endpoint)?.get(served_model).cloned());
        let s = match found {
            Some(s) => s,
            None => {
                let Ok(mut m) = self.series.write() else { return };
                m.entry(endpoint.to_string())
                    .or_default()
                    .entry(served_model.to_string())
                    .or_insert_with(|| Arc::new(Series::new()))
                    .clone()
            }
        };
        s.record(epoch, ok, latency);
    }

    /// Every series over the last `minutes` (at most 60) up to `now_us`, one point per bucket.
    pub fn view(&self, minutes: u32, now_us: i64) -> Vec<SeriesView> {
        merge(&self.raw(minutes, now_us), minutes, now_us)
    }

    /// The non-empty buckets of every series over the last `minutes` up to `now_us`.
    pub fn raw(&self, minutes: u32, now_us: i64) -> Vec<RawSeries> {
        let (first, last) = window(minutes, now_us);
        let Ok(m) = self.series.read() else { return Vec::new() };
        let mut out: Vec<RawSeries> = m
            .iter()
            .flat_map(|(e, models)| models.iter().map(move |(s, series)| (e, s, series)))
            .map(|(e, s, series)| RawSeries {
                endpoint: e.clone(),
                served_model: s.clone(),
                buckets: (first..=last).filter_map(|epoch| series.raw(epoch)).collect(),
            })
            .collect();
        out.sort_by(|a, b| (&a.endpoint, &a.served_model).cmp(&(&b.endpoint, &b.served_model)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_and_estimate_percentiles() {
        let t = TrafficStats::default();
        let now = 1_795_000_000_000_000;
        for i in 0..1000 {
            t.record("e", "a", i % 10 != 0, Duration::from_micros(1000 + i), now);
        }
        t.record("e", "a", true, Duration::from_millis(5), now - 10_000_000);
        let v = t.view(1, now);
        assert_eq!(v.len(), 1);
        let p = v[0].points.last().unwrap();
        assert_eq!((p.requests, p.errors), (1000, 100));
        let p50 = p.p50_ms.unwrap();
        assert!((p50 / 1.5 - 1.0).abs() < 0.2, "{p50}");
        assert_eq!(v[0].points[v[0].points.len() - 2].requests, 1);
        assert_eq!(v[0].points.len(), 6);
        // an hour later the slot is reused, not added to
        t.record("e", "a", true, Duration::from_millis(1), now + 3_600_000_000);
        let p = t.view(1, now + 3_600_000_000).pop().unwrap().points.pop().unwrap();
        assert_eq!(p.requests, 1);
    }

    #[test]
    fn replicas_counts_merge_by_bucket() {
        let (a, b) = (TrafficStats::default(), TrafficStats::default());
        let now = 1_795_000_000_000_000;
        for i in 0..300 {
            a.record("e", "m", true, Duration::from_millis(1), now);
            if i % 3 == 0 {
                b.record("e", "m", i % 2 == 0, Duration::from_millis(100), now);
            }
        }
        b.record("e", "other", true, Duration::from_millis(1), now - 20_000_000);
        let mut raws = a.raw(1, now);
        raws.extend(b.raw(1, now));
        let v = merge(&raws, 1, now);
        assert_eq!(v.len(), 2);
        let p = v[0].points.last().unwrap();
        assert_eq!((p.requests, p.errors), (400, 50));
        // 300 answers of 1 ms and 100 of 100 ms: the median is the first, the p99 the second
        assert!(p.p50_ms.unwrap() < 2.0 && p.p99_ms.unwrap() > 60.0, "{p:?}");
        assert_eq!(v[1].points.iter().map(|p| p.requests).sum::<u64>(), 1);
        // one replica alone: the same as its own view
        assert_eq!(merge(&a.raw(1, now), 1, now), a.view(1, now));
        // a published series with too many latency buckets cannot grow the sums
        let mut odd = a.raw(1, now);
        odd[0].buckets[0].latency = vec![1; 10_000];
        assert_eq!(merge(&odd, 1, now)[0].points.last().unwrap().requests, 300);
    }

    #[test]
    fn latency_buckets_are_monotone() {
        let mut last = 0;
        for ms in [0.0, 0.04, 0.05, 0.1, 1.0, 10.0, 100.0, 1e4, 1e9] {
            let k = latency_bucket(ms);
            assert!(k >= last);
            last = k;
        }
        assert_eq!(latency_bucket(f64::NAN), 0);
        assert_eq!(latency_bucket(1e9), LAT_BUCKETS - 1);
    }
}
