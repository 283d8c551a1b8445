//! Byte budgets for bounded queues (inference-table writers, shadow mirroring). A channel bounds
//! how many items wait; a budget bounds how much memory they hold, since one item can be a
//! 16 MiB request. A producer reserves an estimate of an item's heap size before it enqueues
//! the item and carries the [`Reserved`] guard with it; dropping the guard, wherever the item
//! ends (written, run, discarded at shutdown), gives the bytes back and wakes waiters.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::tensor::Tensor;

/// Bytes that a queue's items may hold at once.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    max: usize,
    freed: Notify,
}

/// Bytes held by one queued item; given back when dropped.
#[derive(Debug)]
pub struct Reserved {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl ByteBudget {
    pub fn new(max: usize) -> Arc<ByteBudget> {
        Arc::new(ByteBudget { used: AtomicUsize::new(0), max, freed: Notify::new() })
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Reserves `bytes`, or `None` when they do not fit. An item larger than the whole budget
    /// fits only when nothing else is held, so it goes alone instead of never.
    pub fn try_reserve(self: &Arc<Self>, bytes: usize) -> Option<Reserved> {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            let fits = used == 0 || used.checked_add(bytes).is_some_and(|total| total <= self.max);
            if !fits {
                return None;
            }
            match self.used.compare_exchange_weak(used, used + bytes, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Reserved { budget: self.clone(), bytes }),
                Err(now) => used = now,
            }
        }
    }

    /// Waits until `bytes` fit, at most until `deadline`.
    pub async fn reserve_until(self: &Arc<Self>, bytes: usize, deadline: tokio::time::Instant) -> Option<Reserved> {
        loop {
            // registered before the check, so a release between the check and the wait wakes us
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(r) = self.try_reserve(bytes) {
                return Some(r);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return None;
            }
        }
    }
}

impl Reserved {
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.budget.freed.notify_waiters();
    }
}

/// Heap bytes of a tensor: its elements (and each BYTES element's buffer) and its shape.
pub fn tensor_bytes(t: &Tensor) -> usize {
    let data = crate::with_numeric_data!(&t.data, v => std::mem::size_of_val(v.as_slice()),
        h => std::mem::size_of_val(h.as_slice()),
        b => b.iter().map(|x| x.len() + std::mem::size_of::<Vec<u8>>()).sum::<usize>());
    data + std::mem::size_of_val(t.shape.as_slice())
}

/// Heap bytes of a list of tensors.
pub fn tensors_bytes(ts: &[Tensor]) -> usize {
    ts.iter().map(|t| tensor_bytes(t) + std::mem::size_of::<Tensor>()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;
    use std::time::Duration;

    #[test]
    fn reservations_are_bounded_and_given_back_on_drop() {
        let b = ByteBudget::new(100);
        let r1 = b.try_reserve(60).unwrap();
        assert!(b.try_reserve(41).is_none());
        let r2 = b.try_reserve(40).unwrap();
        assert_eq!(b.used(), 100);
        drop(r1);
        assert_eq!(b.used(), 40);
        assert!(b.try_reserve(61).is_none());
        drop(r2);
        // larger than the whole budget: only alone
        let big = b.try_reserve(500).unwrap();
        assert!(b.try_reserve(1).is_none());
        drop(big);
        assert_eq!(b.used(), 0);
    }

    #[tokio::test]
    async fn a_waiter_gets_room_when_bytes_are_freed_and_gives_up_at_its_deadline() {
        let b = ByteBudget::new(10);
        let held = b.try_reserve(10).unwrap();
        let soon = tokio::time::Instant::now() + Duration::from_millis(50);
        assert!(b.reserve_until(5, soon).await.is_none(), "nothing was freed before the deadline");
        let b2 = b.clone();
        let waiter =
            tokio::spawn(
                async move { b2.reserve_until(5, tokio::time::Instant::now() + Duration::from_secs(10)).await },
            );
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        let got = waiter.await.unwrap().unwrap();
        assert_eq!((got.bytes(), b.used()), (5, 5));
    }

    #[test]
    fn tensor_sizes_count_elements_and_byte_buffers() {
        let f = Tensor::new(vec![2, 4], TensorData::F32(vec![0.0; 8]));
        assert_eq!(tensor_bytes(&f), 32 + 16);
        let s = Tensor::new(vec![2], TensorData::Bytes(vec![vec![0; 1000], vec![0; 24]]));
        assert_eq!(tensor_bytes(&s), 1024 + 2 * std::mem::size_of::<Vec<u8>>() + 8);
    }
}
