//! The process-wide wasmtime engine and its epoch ticker.
//!
//! Async (host calls and HTTP never block a thread), epoch interruption (a
//! plugin in a loop yields every tick, so the wall-time limit can cancel it),
//! and the pooling allocator (instantiation in microseconds).
//!
//! Where the kernel has `PAGEMAP_SCAN` (Linux 6.7+), a slot's memory and
//! tables are reset after an invocation by rewriting only the pages it
//! dirtied, up to [`KEEP_RESIDENT_MEMORY`] and [`KEEP_RESIDENT_TABLE`] bytes,
//! instead of `madvise` dropping them: the next invocation then takes no page
//! faults and no system call to get them back. That halves the cost of a
//! short invocation (see `docs/benchmarks.md`); the price is that the pages
//! stay resident, at most that much per warm slot. The contents are reset
//! all the same: nothing leaks from one invocation to the next.

use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; the granularity of wall-time limits.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Dirty linear-memory bytes of a slot reset in place rather than dropped.
pub const KEEP_RESIDENT_MEMORY: usize = 2 << 20;

/// Dirty table bytes of a slot reset in place rather than dropped.
pub const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// The fewest elements a table slot of the pool holds (wasmtime's default).
const POOL_TABLE_ELEMENTS: u32 = 20_000;

/// Engine sizing.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    /// Invocations that may run at once (pool slots).
    pub max_instances: u32,
    /// The largest memory any plugin may have, in bytes.
    pub max_memory_bytes: u64,
    /// The most core instances any plugin may create.
    pub max_core_instances: u32,
    /// The most tables any plugin may define.
    pub max_tables: u32,
    /// The most elements of any plugin's table.
    pub max_table_elements: u32,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            max_instances: 64,
            max_memory_bytes: 64 << 20,
            max_core_instances: 16,
            max_tables: 8,
            max_table_elements: 20_000,
        }
    }
}

/// Builds the engine and starts its epoch ticker (a thread that ends when the
/// engine is dropped).
pub fn new_engine(settings: EngineSettings) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Deep recursion must trap, not crash the host.
    config.max_wasm_stack(1 << 20);

    let components = settings.max_instances.max(4);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(components);
    let instances = settings.max_core_instances.max(1);
    let tables = settings.max_tables.max(1);
    // Every slot can hold a component at the largest limits, so a busy pool
    // never refuses a plugin that keeps within its own (the reservation is
    // address space; pages are committed as they are used).
    pool.total_core_instances(components.saturating_mul(instances));
    pool.total_memories(components * 2);
    pool.total_tables(components.saturating_mul(tables));
    // Per component, the pool takes what any limit may allow: each store's
    // limiter holds its plugin to its own limits, with an error naming them.
    pool.max_memories_per_component(super::limiter::MAX_MEMORIES as u32);
    pool.max_tables_per_component(crate::config::MAX_TABLES);
    pool.max_core_instances_per_component(crate::config::MAX_INSTANCES);
    // At least wasmtime's default, so that a plugin whose table starts
    // larger than its own lower limit is refused by its limiter, naming it.
    pool.table_elements(settings.max_table_elements.max(POOL_TABLE_ELEMENTS) as usize);
    pool.max_memory_size(usize::try_from(settings.max_memory_bytes).unwrap_or(usize::MAX));
    // Without PAGEMAP_SCAN, keeping memory resident would mean resetting
    // every kept byte (a memset of megabytes) rather than only dirty pages.
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes);
        pool.linear_memory_keep_resident(KEEP_RESIDENT_MEMORY);
        pool.table_keep_resident(KEEP_RESIDENT_TABLE);
    }
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));

    let engine = Engine::new(&config)?;
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("intake-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map_err(|e| wasmtime::Error::msg(format!("cannot start the epoch thread: {e}")))?;
    Ok(engine)
}
