//! One leader among the replicas that share a config store, for the work only one of them may
//! do (monitor refreshes, config-declared rollouts). The lease needs nothing but create-if-absent
//! writes, so it works on S3 (`If-None-Match: *`) and on a local directory alike:
//!
//! Wall-clock time is cut into slots of `slot` (the lease time). Whoever creates the object
//! `<prefix>/leader/<slot number, 20 digits>.json` holds slot k; only one create can succeed. The
//! holder of slot k claims slot k+1 half-way through k, so a live leader keeps the lease from
//! slot to slot. Others claim a slot only once a quarter of it has passed with nobody holding
//! it: a leader that died (or stopped: it gives back the slot it claimed ahead) is replaced
//! within about two slots. A replica counts as leader while the slot its clock is in is
//! its own, so replicas' clocks must agree to well under a slot (NTP does).
//!
//! Old slot objects are deleted by the leader as it goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Who leads, as this replica last saw it.
#[derive(Debug)]
pub struct Leadership {
    /// This replica's id (`<host>-<pid>-<random>`).
    pub id: String,
    leader: AtomicBool,
    /// The holder of the current slot, when known.
    holder: std::sync::Mutex<Option<String>>,
    /// Without a config store there is one replica: always the leader.
    alone: bool,
}

impl Leadership {
    /// A replica without a config store: the leader of itself.
    pub fn alone() -> Arc<Leadership> {
        Arc::new(Leadership {
            id: replica_id(),
            leader: AtomicBool::new(true),
            holder: std::sync::Mutex::new(None),
            alone: true,
        })
    }

    fn shared(id: String) -> Arc<Leadership> {
        Arc::new(Leadership { id, leader: AtomicBool::new(false), holder: std::sync::Mutex::new(None), alone: false })
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    /// The leader's id (this replica's when it leads); `None` while nobody holds the lease.
    pub fn leader_id(&self) -> Option<String> {
        if self.alone {
            return Some(self.id.clone());
        }
        self.holder.lock().ok().and_then(|h| h.clone())
    }

    fn set(&self, holder: Option<String>) {
        let leads = holder.as_deref() == Some(self.id.as_str());
        self.leader.store(leads, Ordering::Release);
        if let Ok(mut h) = self.holder.lock() {
            *h = holder;
        }
    }
}

/// `<host>-<pid>-<4 random hex>`: unique per process, readable in logs (`HOSTNAME` is the pod
/// name on Kubernetes).
pub fn replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".into());
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}

#[derive(Debug, Serialize, Deserialize)]
struct Slot {
    holder: String,
    slot: u64,
    written_ms: u64,
}

/// The lease of one replica over one store.
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    slot_ms: u64,
    pub leadership: Arc<Leadership>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Lease {
    pub fn new(store: &super::store::ConfigStore, slot: Duration) -> Lease {
        let (store_, prefix) = store.parts();
        Lease {
            store: store_,
            prefix,
            slot_ms: slot.as_millis().max(100) as u64,
            leadership: Leadership::shared(replica_id()),
        }
    }

    fn path(&self, slot: u64) -> ObjectPath {
        self.prefix.clone().join("leader").join(format!("{slot:020}.json"))
    }

    async fn holder_of(&self, slot: u64) -> Result<Option<String>, object_store::Error> {
        match self.store.get(&self.path(slot)).await {
            Ok(g) => {
                if g.meta.size > 4096 {
                    return Ok(Some(format!("<slot object of {} bytes>", g.meta.size)));
                }
                let bytes = g.bytes().await?;
                Ok(Some(
                    serde_json::from_slice::<Slot>(&bytes).map(|s| s.holder).unwrap_or_else(|_| "<unreadable>".into()),
                ))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates slot `slot` for this replica; answers who holds it afterwards.
    async fn claim(&self, slot: u64, now: u64) -> Result<Option<String>, object_store::Error> {
        let body =
            serde_json::to_vec(&Slot { holder: self.leadership.id.clone(), slot, written_ms: now }).unwrap_or_default();
        if sluice_tables::create_if_absent(self.store.as_ref(), &self.path(slot), body).await? {
            Ok(Some(self.leadership.id.clone()))
        } else {
            self.holder_of(slot).await
        }
    }

    /// One look at the lease at time `now` (ms since the epoch): updates [`Leadership`].
    pub async fn tick_at(&self, now: u64) -> Result<(), object_store::Error> {
        let s = self.slot_ms;
        let k = now / s;
        let into = now % s;
        let mut holder = self.holder_of(k).await?;
        if holder.is_none() && into >= s / 4 {
            holder = self.claim(k, now).await?;
        }
        let me = holder.as_deref() == Some(self.leadership.id.as_str());
        if me && into >= s / 2 && self.holder_of(k + 1).await?.is_none() {
            self.claim(k + 1, now).await?;
            // old slots: the leader clears them as it goes (best effort)
            if k >= 16 {
                let _ = self.store.delete(&self.path(k - 16)).await;
            }
        }
        self.leadership.set(holder);
        Ok(())
    }

    /// Looks at the lease four times a slot until `token` is cancelled; then gives back the
    /// slot claimed ahead, so another replica takes over at the next slot.
    pub async fn run(self: Arc<Self>, token: CancellationToken) {
        let every = Duration::from_millis((self.slot_ms / 4).max(25));
        let mut warned = false;
        loop {
            match self.tick_at(now_ms()).await {
                Ok(()) => warned = false,
                Err(e) => {
                    // an unreachable store: lead no longer (the others cannot see us renew)
                    self.leadership.set(None);
                    if !warned {
                        tracing::warn!("leader lease: the config store cannot be reached; not leading: {e}");
                        warned = true;
                    }
                }
            }
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
        self.step_down().await;
    }

    /// Gives back the slots this replica holds from now on (a clean stop).
    pub async fn step_down(&self) {
        let k = now_ms() / self.slot_ms;
        for slot in [k + 1, k + 2] {
            if self.holder_of(slot).await.ok().flatten().as_deref() == Some(self.leadership.id.as_str()) {
                let _ = self.store.delete(&self.path(slot)).await;
            }
        }
        self.leadership.set(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(dir: &std::path::Path, slot_ms: u64) -> Lease {
        let store = super::super::store::ConfigStore::open(&sluice_tables::Location::Local(dir.to_path_buf())).unwrap();
        Lease::new(&store, Duration::from_millis(slot_ms))
    }

    /// Three replicas looking at the lease at random times for 200 slots, one of them dying
    /// for a while: at no time do two of them lead the same slot, a live leader keeps it, and
    /// a dead one is replaced within two slots.
    #[tokio::test]
    async fn at_most_one_leader_per_slot_and_a_dead_one_is_replaced() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let s = 1000u64;
        let replicas: Vec<Lease> = (0..3).map(|_| lease(dir.path(), s)).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let start = 1_000_000 * s;
        let mut leaders_by_slot: std::collections::BTreeMap<u64, std::collections::BTreeSet<usize>> =
            Default::default();
        let mut gap_slots = Vec::new();
        let dead = 80..120u64; // replica 0's downtime, in slots from the start
        let mut t = start;
        while t < start + 200 * s {
            // each live replica looks about four times a slot, in random order
            t += rng.random_range(100..300);
            let slot = t / s;
            for (i, r) in replicas.iter().enumerate() {
                let alive = !(i == 0 && dead.contains(&(slot - start / s)));
                if !alive {
                    r.leadership.set(None);
                    continue;
                }
                r.tick_at(t + rng.random_range(0..20)).await.unwrap();
                if r.leadership.is_leader() {
                    leaders_by_slot.entry(slot).or_default().insert(i);
                }
            }
            if replicas.iter().all(|r| !r.leadership.is_leader()) {
                gap_slots.push(slot - start / s);
            }
        }
        for (slot, who) in &leaders_by_slot {
            assert_eq!(who.len(), 1, "slot {slot} led by {who:?}");
        }
        // one leader from the first claim on, except around the first slot and a dead leader
        let leaderless: std::collections::BTreeSet<u64> = gap_slots.into_iter().collect();
        assert!(leaderless.iter().all(|&k| k <= 1 || (80..=82).contains(&k)), "{leaderless:?}");
        // the lease moved once: away from the dead leader
        let holders: Vec<usize> = leaders_by_slot.values().map(|w| *w.iter().next().unwrap()).collect();
        let changes = holders.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(changes <= 1, "the lease moved {changes} times: {holders:?}");
        // replica 0 (first to look) led, died, and was replaced; it did not take the lease back
        let led = |k: u64| leaders_by_slot.get(&(start / s + k)).and_then(|w| w.iter().next().copied());
        assert_eq!(led(50), Some(0));
        assert!(matches!(led(100), Some(1 | 2)), "{:?}", led(100));
        assert_eq!(led(150), led(100));
    }

    #[tokio::test]
    async fn a_replica_that_steps_down_is_replaced_at_the_next_slot() {
        let dir = tempfile::tempdir().unwrap();
        let s = 1000u64;
        let (a, b) = (lease(dir.path(), s), lease(dir.path(), s));
        let t = 5_000_000 * s;
        a.tick_at(t + 300).await.unwrap();
        b.tick_at(t + 310).await.unwrap();
        assert!(a.leadership.is_leader() && !b.leadership.is_leader());
        assert_eq!(b.leadership.leader_id(), Some(a.leadership.id.clone()));
        a.tick_at(t + 600).await.unwrap(); // claims the next slot ahead
        // a stops: it gives back the slot it claimed ahead (deleting by the real clock's slot
        // number does nothing here, so give it back as step_down would at this time)
        let next = a.path(t / s + 1);
        a.store.delete(&next).await.unwrap();
        b.tick_at(t + s + 300).await.unwrap();
        assert!(b.leadership.is_leader(), "b leads the next slot");
    }

    #[tokio::test]
    async fn an_unreadable_slot_object_is_nobody_here() {
        let dir = tempfile::tempdir().unwrap();
        let a = lease(dir.path(), 1000);
        let t = 7_000_000 * 1000u64;
        let p = dir.path().join("leader");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join(format!("{:020}.json", t / 1000)), b"not json").unwrap();
        a.tick_at(t + 400).await.unwrap();
        assert!(!a.leadership.is_leader());
        assert_eq!(a.leadership.leader_id().as_deref(), Some("<unreadable>"));
    }
}
