//! Endpoints and the choice of served model per request: weighted random (seedable), sticky
//! by key, pinned by header where allowed. The choice functions are pure and unit-tested.
//!
//! Sticky assignment uses weighted rendezvous hashing: each route scores
//! `weight / -ln(u)` with `u` a stable hash of (endpoint, key, served model) in (0, 1), and the
//! highest score wins. A key lands on a route with probability proportional to its weight, and
//! when one route's weight grows (a canary going from 5% to 25%), keys only move *into* it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::task::TaskTracker;

use super::capture::{CaptureContext, StatusOf, TableSet, prediction_kind, prediction_spec, table_layout};
use super::served::ServedModel;
use super::shadow::ShadowQueue;
use super::{BuildError, CoreError, RequestMeta};
use crate::config::{EndpointConfig, StickyKey};
use crate::inference_log::Table;
use crate::metrics::EndpointMetrics;
use crate::registry::Registry;
use crate::tensor::Tensor;

/// What a request says about where it wants to go.
#[derive(Debug, Default, Clone, Copy)]
pub struct RouteHints<'a> {
    /// `x-sluice-served-model`: pin a served model (only where the endpoint allows it).
    pub pin: Option<&'a str>,
    /// The request's sticky key, when the endpoint has one and the request carries it.
    pub sticky: Option<&'a str>,
}

/// An endpoint ready to route.
#[derive(Debug)]
pub struct Endpoint {
    pub config: EndpointConfig,
    served: Vec<Arc<ServedModel>>,
    /// (served index, weight) for each route.
    routes: Vec<(usize, u32)>,
    /// Running sum of route weights; the last is 100.
    cumulative: Vec<u32>,
    rng: SplitMix,
    pub(super) shadow: Option<ShadowQueue>,
    table: Option<Table>,
    status_of: StatusOf,
}

impl Endpoint {
    /// Resolves an endpoint config against loaded models and checks that every served model
    /// takes the same inputs (so one request fits all of them, shadows included).
    pub fn build(
        cfg: &EndpointConfig,
        registry: &Registry,
        tasks: &TaskTracker,
        tables: &TableSet,
    ) -> Result<Endpoint, BuildError> {
        let err = |message: String| BuildError::Endpoint { endpoint: cfg.name.clone(), message };
        let mut served = Vec::with_capacity(cfg.served_entities.len());
        for entity in &cfg.served_entities {
            let model = registry
                .get_version(&entity.model, entity.version)
                .ok_or_else(|| err(format!("{} v{} is not loaded", entity.model, entity.version)))?;
            served.push(Arc::new(ServedModel {
                name: Arc::from(entity.name.as_str()),
                model: model.clone(),
                metrics: EndpointMetrics::new(&cfg.name, &entity.name),
                spec: Arc::new(prediction_spec(model)),
            }));
        }
        let index = |name: &str| served.iter().position(|s| &*s.name == name);
        let mut routes = Vec::with_capacity(cfg.routes.len());
        let mut cumulative = Vec::with_capacity(cfg.routes.len());
        let mut total = 0;
        for r in &cfg.routes {
            let i = index(&r.served_model_name)
                .ok_or_else(|| err(format!("route to unknown '{}'", r.served_model_name)))?;
            total += r.traffic_percentage;
            routes.push((i, r.traffic_percentage));
            cumulative.push(total);
        }
        let first = routes.first().map(|(i, _)| served[*i].clone());
        if let Some(first) = &first {
            for s in &served {
                check_fit(first, s).map_err(err)?;
            }
        }
        let table = match (&cfg.table, &first) {
            (Some(opts), Some(first)) => {
                let kind = prediction_kind(&first.model);
                if let Some(s) = served.iter().find(|s| prediction_kind(&s.model) != kind) {
                    return Err(err(format!(
                        "'{}' answers {:?} but '{}' answers {kind:?}; an inference table needs one kind of prediction",
                        s.name,
                        prediction_kind(&s.model),
                        first.name
                    )));
                }
                Some(tables.get_or_open(opts, &table_layout(&first.model)).map_err(|e| err(e.to_string()))?)
            }
            _ => None,
        };
        let shadows: Vec<(Arc<ServedModel>, u32)> = cfg
            .shadows
            .iter()
            .filter_map(|s| index(&s.served_model_name).map(|i| (served[i].clone(), s.mirror_percent)))
            .collect();
        let shadow = (!shadows.is_empty()).then(|| {
            ShadowQueue::start(&cfg.name, shadows, cfg.shadow_queue_capacity, cfg.shadow_queue_max_bytes, tasks)
        });
        Ok(Endpoint {
            config: cfg.clone(),
            served,
            routes,
            cumulative,
            rng: SplitMix::new(cfg.routing_seed.unwrap_or_else(rand::random)),
            shadow,
            table,
            status_of: tables.status_of(),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// A served model by name (direct route, pinning).
    pub fn served(&self, name: &str) -> Result<&Arc<ServedModel>, CoreError> {
        self.served.iter().find(|s| &*s.name == name).ok_or_else(|| {
            CoreError::NotFound(format!(
                "endpoint '{}' has no served model '{name}'; it has {:?}",
                self.config.name,
                self.served.iter().map(|s| &*s.name).collect::<Vec<_>>()
            ))
        })
    }

    /// Every served model (routes and shadows).
    pub fn served_models(&self) -> &[Arc<ServedModel>] {
        &self.served
    }

    /// The header that carries the sticky key, if the endpoint has one.
    pub fn sticky_header(&self) -> Option<&str> {
        match &self.config.sticky_key {
            Some(StickyKey::Header(h)) => Some(h),
            _ => None,
        }
    }

    /// The request field that carries the sticky key, if the endpoint has one.
    pub fn sticky_field(&self) -> Option<&str> {
        match &self.config.sticky_key {
            Some(StickyKey::Field(f)) => Some(f),
            _ => None,
        }
    }

    /// Picks the served model for a request.
    pub fn route(&self, hints: RouteHints<'_>) -> Result<&Arc<ServedModel>, CoreError> {
        if let Some(pin) = hints.pin {
            if !self.config.allow_override {
                return Err(CoreError::Forbidden(format!(
                    "endpoint '{}' does not allow pinning a served model with x-sluice-served-model; \
                     set allow_served_model_override = true on it, or call \
                     /endpoints/{}/served-models/{{served}}/predict",
                    self.config.name, self.config.name
                )));
            }
            return self.served(pin);
        }
        let i = match hints.sticky {
            Some(key) => {
                sticky_pick(&self.config.name, key, self.routes.iter().map(|&(i, w)| (&*self.served[i].name, w)))
            }
            None => pick_index(&self.cumulative, self.rng.next_unit()),
        };
        let (served, _) =
            self.routes.get(i).or(self.routes.last()).ok_or_else(|| {
                CoreError::Unavailable(format!("endpoint '{}' has no traffic routes", self.config.name))
            })?;
        Ok(&self.served[*served])
    }

    /// Test hook: see [`ShadowQueue::set_gate`]. No effect on an endpoint without shadows.
    #[doc(hidden)]
    pub fn set_shadow_gate(&self, gate: Option<Arc<tokio::sync::Semaphore>>) {
        if let Some(q) = &self.shadow {
            q.set_gate(gate);
        }
    }

    /// Bytes (estimated) that mirrored copies hold now, queued or running; 0 without shadows.
    pub fn shadow_queued_bytes(&self) -> usize {
        self.shadow.as_ref().map_or(0, |q| q.queued_bytes())
    }

    /// The endpoint's inference table, if logging is on.
    pub fn table(&self) -> Option<&Table> {
        self.table.as_ref()
    }

    /// The capture context of a request, when the endpoint logs and the request is in the sample.
    pub fn capture(&self, meta: &RequestMeta, client_request_id: Option<String>) -> Option<CaptureContext> {
        let table = self.table.as_ref()?;
        if !table.sampled(self.next_unit()) {
            return None;
        }
        Some(CaptureContext {
            table: table.clone(),
            status_of: self.status_of,
            endpoint: Arc::from(self.config.name.as_str()),
            request_id: meta.request_id.clone(),
            client_request_id,
            requester: meta.requester.clone(),
            timestamp_us: crate::inference_log::now_us(),
        })
    }

    /// Mirrors validated request tensors to the shadows (logged under the same capture).
    pub fn mirror(&self, inputs: &Arc<Vec<Tensor>>, capture: Option<&CaptureContext>) {
        if let Some(q) = &self.shadow {
            q.mirror(inputs, || self.next_unit(), capture);
        }
    }

    /// A uniform draw in [0, 1) from the endpoint's (seedable) generator.
    pub fn next_unit(&self) -> f64 {
        self.rng.next_unit()
    }
}

/// Every served model of an endpoint must take the same inputs as the first route's model.
fn check_fit(first: &ServedModel, other: &ServedModel) -> Result<(), String> {
    let (a, b) = (&first.model, &other.model);
    if a.runner.schema().inputs != b.runner.schema().inputs {
        return Err(format!(
            "'{}' ({} v{}) takes inputs {:?}, but '{}' ({} v{}) takes {:?}; every served model of an endpoint must take the same inputs",
            other.name,
            b.name,
            b.version,
            b.runner.schema().inputs.iter().map(|t| (&t.name, t.dtype.v2_name(), &t.shape)).collect::<Vec<_>>(),
            first.name,
            a.name,
            a.version,
            a.runner.schema().inputs.iter().map(|t| (&t.name, t.dtype.v2_name(), &t.shape)).collect::<Vec<_>>(),
        ));
    }
    if a.features != b.features {
        return Err(format!(
            "'{}' has features {:?} but '{}' has {:?}; every served model of an endpoint must take the same features",
            other.name, b.features, first.name, a.features
        ));
    }
    Ok(())
}

/// Index of the bucket that `u` in [0, 1) falls into, given cumulative percentages.
pub fn pick_index(cumulative: &[u32], u: f64) -> usize {
    let point = u * 100.0;
    cumulative.iter().position(|&c| point < f64::from(c)).unwrap_or(cumulative.len().saturating_sub(1))
}

/// Weighted rendezvous choice among `(name, weight)` routes for `key`; returns the route index.
pub fn sticky_pick<'a>(endpoint: &str, key: &str, routes: impl Iterator<Item = (&'a str, u32)>) -> usize {
    let mut best = (0usize, f64::NEG_INFINITY);
    for (i, (name, w)) in routes.enumerate() {
        if w == 0 {
            continue;
        }
        let u = unit_open(hash64(&[endpoint.as_bytes(), key.as_bytes(), name.as_bytes()]));
        let score = f64::from(w) / -u.ln();
        if score > best.1 {
            best = (i, score);
        }
    }
    best.0
}

/// FNV-1a over the parts (with a separator), finished with SplitMix64: stable across builds.
fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Maps a hash to (0, 1), never 0 or 1.
fn unit_open(h: u64) -> f64 {
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// A lock-free SplitMix64 stream: reproducible from its seed, shared by concurrent requests.
#[derive(Debug)]
struct SplitMix(AtomicU64);

impl SplitMix {
    fn new(seed: u64) -> SplitMix {
        SplitMix(AtomicU64::new(seed))
    }

    fn next_unit(&self) -> f64 {
        let s = self.0.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        (mix(s.wrapping_add(0x9e37_79b9_7f4a_7c15)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_cumulative_weights() {
        let c = [90, 100];
        assert_eq!(pick_index(&c, 0.0), 0);
        assert_eq!(pick_index(&c, 0.899), 0);
        assert_eq!(pick_index(&c, 0.9), 1);
        assert_eq!(pick_index(&c, 0.999_999), 1);
        let z = [0, 100];
        assert_eq!(pick_index(&z, 0.0), 1, "a zero-weight route is never picked");
    }

    #[test]
    fn seeded_stream_is_reproducible_and_uniform() {
        let a = SplitMix::new(7);
        let b = SplitMix::new(7);
        let xs: Vec<f64> = (0..10_000).map(|_| a.next_unit()).collect();
        let ys: Vec<f64> = (0..10_000).map(|_| b.next_unit()).collect();
        assert_eq!(xs, ys);
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
    }

    #[test]
    fn sticky_shares_follow_weights_and_a_growing_canary_only_gains_keys() {
        let keys: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
        let pick = |w: [u32; 2]| -> Vec<usize> {
            keys.iter().map(|k| sticky_pick("ep", k, [("champion", w[0]), ("canary", w[1])].into_iter())).collect()
        };
        let before = pick([95, 5]);
        let after = pick([75, 25]);
        let share = |v: &[usize]| v.iter().filter(|&&i| i == 1).count() as f64 / v.len() as f64;
        assert!((share(&before) - 0.05).abs() < 0.01, "{}", share(&before));
        assert!((share(&after) - 0.25).abs() < 0.015, "{}", share(&after));
        assert!(before.iter().zip(&after).all(|(b, a)| !(*b == 1 && *a == 0)), "a key left the canary");
        assert_eq!(pick([95, 5]), before, "assignment is stable");
        // a zero-weight route gets nothing
        assert!(keys.iter().all(|k| sticky_pick("ep", k, [("a", 100), ("b", 0)].into_iter()) == 0));
    }
}

#[cfg(test)]
mod sticky_table {
    /// The sticky split as committed in `tests/fixtures/sticky_assignments.json`, computed once:
    /// every replica, every restart and every later build must give each key the same served
    /// model, so a change of the hash (or of its inputs) fails here.
    #[test]
    fn sticky_assignments_match_the_committed_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sticky_assignments.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let table: serde_json::Value = serde_json::from_str(&text).unwrap();
        let endpoint = table["endpoint"].as_str().unwrap();
        let mut checked = 0;
        for case in table["cases"].as_array().unwrap() {
            let routes: Vec<(String, u32)> = case["routes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_u64().unwrap() as u32))
                .collect();
            for (key, want) in case["keys"].as_object().unwrap() {
                let i = super::sticky_pick(endpoint, key, routes.iter().map(|(n, w)| (n.as_str(), *w)));
                assert_eq!(routes[i].0, want.as_str().unwrap(), "key {key} with routes {routes:?}");
                checked += 1;
            }
        }
        assert!(checked >= 600, "{checked}");
    }
}
