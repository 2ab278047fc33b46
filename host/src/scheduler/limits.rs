//! Concurrency limits: how many fetches run at once, in all and per platform.
//!
//! A fetch attempt holds a permit of the global limit and, if its platform
//! has one, of the platform's, for as long as it talks to the platform; a run
//! waiting to retry holds none, so a throttled platform or user does not
//! take slots from everyone else. A reload resizes the limits in place: runs
//! in flight keep counting against them, so a platform never runs more than
//! its (new) limit at once, once the runs above it have finished.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;

/// One resizable limit.
#[derive(Debug)]
struct Limit {
    permits: Arc<Semaphore>,
    size: Mutex<usize>,
}

impl Limit {
    fn new(size: usize) -> Arc<Self> {
        let size = size.max(1);
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(size)),
            size: Mutex::new(size),
        })
    }

    /// Changes the number of permits to `new`: more are added at once; fewer
    /// are taken out of circulation as permits in use come back.
    fn resize(&self, new: usize) {
        let new = new.max(1);
        let mut size = self.size.lock().unwrap_or_else(PoisonError::into_inner);
        match new.cmp(&*size) {
            std::cmp::Ordering::Greater => self.permits.add_permits(new - *size),
            std::cmp::Ordering::Less => {
                let mut surplus = *size - new;
                surplus -= self.permits.forget_permits(surplus);
                if surplus > 0 {
                    let permits = self.permits.clone();
                    let Ok(surplus) = u32::try_from(surplus) else {
                        return;
                    };
                    tokio::spawn(async move {
                        if let Ok(taken) = permits.acquire_many_owned(surplus).await {
                            taken.forget();
                        }
                    });
                }
            }
            std::cmp::Ordering::Equal => {}
        }
        *size = new;
    }

    async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().acquire_owned().await.ok()
    }
}

/// The permits one fetch attempt holds.
#[derive(Debug)]
pub struct Permits {
    _platform: Option<OwnedSemaphorePermit>,
    _global: Option<OwnedSemaphorePermit>,
}

/// The global limit and the per-platform limits.
#[derive(Debug)]
pub struct Limits {
    global: Arc<Limit>,
    platforms: Mutex<HashMap<String, Arc<Limit>>>,
}

impl Limits {
    /// The limits `config` sets.
    pub fn new(config: &Config) -> Self {
        let limits = Self {
            global: Limit::new(config.scheduler.concurrency),
            platforms: Mutex::default(),
        };
        limits.apply(config);
        limits
    }

    /// Takes on the limits of a reloaded `config`.
    pub fn apply(&self, config: &Config) {
        self.global.resize(config.scheduler.concurrency);
        let mut platforms = self
            .platforms
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut kept = HashMap::new();
        for plugin in &config.plugins {
            let Some(n) = plugin.concurrency else {
                continue;
            };
            let limit = match platforms.remove(&plugin.platform) {
                Some(limit) => {
                    limit.resize(n);
                    limit
                }
                None => Limit::new(n),
            };
            kept.insert(plugin.platform.clone(), limit);
        }
        *platforms = kept;
    }

    /// Waits for a permit of `platform`'s limit (if it has one), then of the
    /// global one.
    pub async fn acquire(&self, platform: &str) -> Permits {
        let limit = self
            .platforms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(platform)
            .cloned();
        let platform = match limit {
            Some(limit) => limit.acquire().await,
            None => None,
        };
        Permits {
            _platform: platform,
            _global: self.global.acquire().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_limit_shrinks_as_permits_come_back_and_grows_at_once() {
        let limit = Limit::new(3);
        let a = limit.acquire().await.unwrap();
        let b = limit.acquire().await.unwrap();
        limit.resize(1);
        // Two are in use, one free: the free one goes at once, one more is
        // owed and taken when a permit comes back.
        assert_eq!(limit.permits.available_permits(), 0);
        drop(a);
        tokio::task::yield_now().await;
        assert_eq!(limit.permits.available_permits(), 0);
        drop(b);
        assert_eq!(limit.permits.available_permits(), 1);
        limit.resize(4);
        assert_eq!(limit.permits.available_permits(), 4);
    }
}
