//! Concurrency limits: how many fetches run at once, in all and per platform,
//! handed out fairly across users.
//!
//! A fetch attempt holds a slot of the global limit and one of its
//! platform's (if the platform has a limit) for as long as it talks to the
//! platform; a run waiting to retry holds none, so a throttled platform or
//! user does not take slots from everyone else.
//!
//! Waiting attempts queue per owner (user). When a slot frees up, the owners
//! with waiting attempts take turns (round robin), and each owner's attempts
//! go in the order they asked; an attempt whose platform is at its limit is
//! passed over for the next one that can run, so one platform's queue never
//! blocks another's. So a user with a thousand data sources does not make
//! another user's one data source wait behind all of them, however the tasks
//! happen to be scheduled.
//!
//! A reload resizes the limits in place: attempts in flight keep counting
//! against them, so a platform never runs more than its (new) limit at once,
//! once the attempts above it have finished.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use crate::config::Config;

/// Slots of one limit: how many there are (`None`: no limit) and in use.
#[derive(Debug, Default)]
struct Slots {
    size: Option<usize>,
    in_use: usize,
}

impl Slots {
    fn has_room(&self) -> bool {
        self.size.is_none_or(|size| self.in_use < size)
    }
}

/// An attempt waiting for its slots.
#[derive(Debug)]
struct Waiter {
    platform: String,
    grant: oneshot::Sender<Permits>,
}

#[derive(Debug, Default)]
struct State {
    global: Slots,
    platforms: HashMap<String, Slots>,
    /// Waiting attempts by owner, each owner's in the order they asked.
    waiting: HashMap<String, VecDeque<Waiter>>,
    /// Owners with waiting attempts; the front one is served next.
    turns: VecDeque<String>,
}

impl State {
    fn has_room(&self, platform: &str) -> bool {
        self.global.has_room() && self.platforms.get(platform).is_none_or(Slots::has_room)
    }

    fn take(&mut self, platform: &str) {
        self.global.in_use += 1;
        self.platforms
            .entry(platform.to_owned())
            .or_default()
            .in_use += 1;
    }

    fn release(&mut self, platform: &str) {
        self.global.in_use = self.global.in_use.saturating_sub(1);
        if let Some(slots) = self.platforms.get_mut(platform) {
            slots.in_use = slots.in_use.saturating_sub(1);
        }
    }

    /// Hands free slots to waiting attempts: owners in turn, each owner's
    /// first attempt whose platform has room.
    fn dispatch(&mut self, shared: &Arc<Mutex<State>>) {
        let mut passes_without_grant = 0;
        while self.global.has_room() && passes_without_grant < self.turns.len() {
            let Some(owner) = self.turns.pop_front() else {
                break;
            };
            let queue = self.waiting.entry(owner.clone()).or_default();
            let chosen = queue
                .iter()
                .position(|w| self.platforms.get(&w.platform).is_none_or(Slots::has_room));
            let granted = match chosen.and_then(|i| queue.remove(i)) {
                Some(waiter) => {
                    let Waiter { platform, grant } = waiter;
                    self.take(&platform);
                    let permits = Permits {
                        limits: Some(shared.clone()),
                        platform: platform.clone(),
                    };
                    if let Err(mut unwanted) = grant.send(permits) {
                        // The attempt stopped waiting (cancelled): its slots
                        // go back without dispatching again from inside.
                        unwanted.limits = None;
                        self.release(&platform);
                    }
                    true
                }
                None => false,
            };
            let queue_empty = self.waiting.get(&owner).is_none_or(VecDeque::is_empty);
            if queue_empty {
                self.waiting.remove(&owner);
            } else {
                self.turns.push_back(owner);
            }
            passes_without_grant = if granted { 0 } else { passes_without_grant + 1 };
        }
    }
}

/// The slots one fetch attempt holds; given back when dropped.
#[derive(Debug)]
pub struct Permits {
    limits: Option<Arc<Mutex<State>>>,
    platform: String,
}

impl Drop for Permits {
    fn drop(&mut self) {
        if let Some(shared) = self.limits.take() {
            let mut state = lock(&shared);
            state.release(&self.platform);
            state.dispatch(&shared);
        }
    }
}

fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every change under the lock leaves the counts consistent (no panics
    // between a take and its bookkeeping), so a poisoned lock is usable.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The global limit and the per-platform limits.
#[derive(Debug)]
pub struct Limits {
    shared: Arc<Mutex<State>>,
}

impl Limits {
    /// The limits `config` sets.
    pub fn new(config: &Config) -> Self {
        let limits = Self {
            shared: Arc::default(),
        };
        limits.apply(config);
        limits
    }

    /// Takes on the limits of a (reloaded) `config`.
    pub fn apply(&self, config: &Config) {
        let mut state = lock(&self.shared);
        state.global.size = Some(config.scheduler.concurrency.max(1));
        for slots in state.platforms.values_mut() {
            slots.size = None;
        }
        for plugin in &config.plugins {
            if let Some(n) = plugin.concurrency {
                state
                    .platforms
                    .entry(plugin.platform.clone())
                    .or_default()
                    .size = Some(n.max(1));
            }
        }
        state
            .platforms
            .retain(|_, slots| slots.size.is_some() || slots.in_use > 0);
        state.dispatch(&self.shared);
    }

    /// Waits for a slot of `platform`'s limit (if it has one) and of the
    /// global one, in `owner`'s turn.
    pub async fn acquire(&self, platform: &str, owner: &str) -> Permits {
        let (grant, granted) = oneshot::channel();
        {
            let mut state = lock(&self.shared);
            if state.turns.is_empty() && state.has_room(platform) {
                state.take(platform);
                return Permits {
                    limits: Some(self.shared.clone()),
                    platform: platform.to_owned(),
                };
            }
            state
                .waiting
                .entry(owner.to_owned())
                .or_default()
                .push_back(Waiter {
                    platform: platform.to_owned(),
                    grant,
                });
            if !state.turns.iter().any(|o| o == owner) {
                state.turns.push_back(owner.to_owned());
            }
            state.dispatch(&self.shared);
        }
        match granted.await {
            Ok(permits) => permits,
            // The sender lives in the queue until it is used, and the queue
            // lives as long as `self`: unreachable, but never hang on it.
            Err(_) => Permits {
                limits: None,
                platform: platform.to_owned(),
            },
        }
    }

    /// Attempts running now, in all.
    #[cfg(test)]
    fn in_use(&self) -> usize {
        lock(&self.shared).global.in_use
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(global: usize, platforms: &[(&str, usize)]) -> Config {
        let mut text = format!("[scheduler]\nconcurrency = {global}\n");
        for (platform, n) in platforms {
            text.push_str(&format!(
                "[[plugin]]\nplatform = \"{platform}\"\npath = \"{platform}.wasm\"\nconcurrency = {n}\n"
            ));
        }
        Config::parse(&text, "test", ".".into()).unwrap()
    }

    /// Starts `count` waiters of `owner` on `platform`, each sending its
    /// label to `order` when it gets its slots and holding them until told.
    fn waiters(
        limits: &Arc<Limits>,
        owner: &str,
        platform: &str,
        count: usize,
        order: &tokio::sync::mpsc::UnboundedSender<(String, oneshot::Sender<()>)>,
    ) {
        for i in 0..count {
            let (limits, order) = (limits.clone(), order.clone());
            let (owner, platform) = (owner.to_owned(), platform.to_owned());
            tokio::spawn(async move {
                let permits = limits.acquire(&platform, &owner).await;
                let (done, finished) = oneshot::channel();
                let _ = order.send((format!("{owner}-{platform}{i}"), done));
                let _ = finished.await;
                drop(permits);
            });
        }
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn owners_take_turns_whatever_order_they_asked_in() {
        let limits = Arc::new(Limits::new(&config(1, &[])));
        let blocker = limits.acquire("p", "x").await;
        let (order, mut got) = tokio::sync::mpsc::unbounded_channel();
        waiters(&limits, "alice", "p", 4, &order);
        settle().await;
        waiters(&limits, "bob", "p", 1, &order);
        settle().await;
        drop(blocker);
        let mut seen = Vec::new();
        for _ in 0..5 {
            let (label, done) = tokio::time::timeout(Duration::from_secs(5), got.recv())
                .await
                .unwrap()
                .unwrap();
            seen.push(label);
            assert_eq!(limits.in_use(), 1);
            let _ = done.send(());
        }
        // Bob asked last, but is served second: alice's first, then bob's.
        assert_eq!(seen[..2], ["alice-p0", "bob-p0"]);
        assert_eq!(seen[2..], ["alice-p1", "alice-p2", "alice-p3"]);
    }

    #[tokio::test]
    async fn a_full_platform_does_not_block_another() {
        let limits = Arc::new(Limits::new(&config(4, &[("slow", 1)])));
        let blocker = limits.acquire("slow", "alice").await;
        let (order, mut got) = tokio::sync::mpsc::unbounded_channel();
        waiters(&limits, "alice", "slow", 2, &order);
        settle().await;
        waiters(&limits, "alice", "fast", 1, &order);
        let (label, done) = tokio::time::timeout(Duration::from_secs(5), got.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            label, "alice-fast0",
            "the fast platform's attempt runs at once"
        );
        let _ = done.send(());
        drop(blocker);
        let (label, _done) = tokio::time::timeout(Duration::from_secs(5), got.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(label, "alice-slow0");
        settle().await;
        // One slow attempt at a time.
        assert_eq!(limits.in_use(), 1);
    }

    #[tokio::test]
    async fn a_cancelled_wait_gives_its_turn_away() {
        let limits = Arc::new(Limits::new(&config(1, &[])));
        let blocker = limits.acquire("p", "alice").await;
        let cancelled = {
            let limits = limits.clone();
            tokio::spawn(async move { limits.acquire("p", "bob").await })
        };
        settle().await;
        cancelled.abort();
        let _ = cancelled.await;
        let (order, mut got) = tokio::sync::mpsc::unbounded_channel();
        waiters(&limits, "carol", "p", 1, &order);
        settle().await;
        drop(blocker);
        let (label, _done) = tokio::time::timeout(Duration::from_secs(5), got.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(label, "carol-p0");
        assert_eq!(limits.in_use(), 1);
    }

    #[tokio::test]
    async fn a_limit_shrinks_as_slots_come_back_and_grows_at_once() {
        let limits = Arc::new(Limits::new(&config(3, &[])));
        let a = limits.acquire("p", "u").await;
        let b = limits.acquire("p", "u").await;
        limits.apply(&config(1, &[]));
        let (order, mut got) = tokio::sync::mpsc::unbounded_channel();
        waiters(&limits, "u", "p", 1, &order);
        settle().await;
        assert!(got.try_recv().is_err(), "two in use, the limit is one");
        drop(a);
        settle().await;
        assert!(got.try_recv().is_err(), "still one in use");
        drop(b);
        let (_, done) = tokio::time::timeout(Duration::from_secs(5), got.recv())
            .await
            .unwrap()
            .unwrap();
        limits.apply(&config(4, &[]));
        let more: Vec<_> = acquire_many(&limits, 3).await;
        assert_eq!(limits.in_use(), 4);
        drop(more);
        let _ = done.send(());
    }

    async fn acquire_many(limits: &Limits, n: usize) -> Vec<Permits> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(
                tokio::time::timeout(Duration::from_secs(5), limits.acquire("p", "v"))
                    .await
                    .unwrap(),
            );
        }
        out
    }
}
