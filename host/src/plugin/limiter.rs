//! Per-invocation resource limits inside wasm: memory, tables and instances.
//!
//! wasmtime asks a store's [`ResourceLimiter`] before a memory or table grows
//! and when it counts instances, tables and memories at instantiation. This
//! one enforces the plugin's `[plugin.limits]` and, when a plugin goes past
//! one, traps with a [`LimitExceeded`] that names the setting to raise, so
//! the run fails with `limit exceeded: … (limits.NAME)` rather than a crash
//! report, and is never retried.

use wasmtime::ResourceLimiter;

use crate::config::Limits;

use super::state::LimitExceeded;

/// Core instances, tables and memories of one component are also bounded by
/// the instance pool; these are the pool's per-component maxima, which every
/// plugin's limits must fit (see [`crate::config::Limits::validate`]).
pub const MAX_MEMORIES: usize = 4;

/// Enforces one invocation's limits.
#[derive(Debug, Clone)]
pub struct InvocationLimiter {
    memory_bytes: usize,
    memory_mib: u64,
    table_elements: usize,
    instances: usize,
    tables: usize,
}

impl InvocationLimiter {
    /// The limiter for a plugin with `limits`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            memory_bytes: usize::try_from(limits.memory_bytes()).unwrap_or(usize::MAX),
            memory_mib: limits.memory_mib,
            table_elements: usize::try_from(limits.table_elements).unwrap_or(usize::MAX),
            instances: usize::try_from(limits.instances).unwrap_or(usize::MAX),
            tables: usize::try_from(limits.tables).unwrap_or(usize::MAX),
        }
    }

    fn memory_exceeded(&self) -> wasmtime::Error {
        wasmtime::Error::new(LimitExceeded(format!(
            "the plugin needed more memory than limits.memory_mib = {} MiB allows",
            self.memory_mib
        )))
    }
}

impl ResourceLimiter for InvocationLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            return Err(self.memory_exceeded());
        }
        // Past the memory's own declared maximum: `memory.grow` returns -1,
        // as the wasm specification says, and the plugin decides.
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // Within the limit but the pool slot could not grow (it is sized to
        // the largest limit, so this is the limit in effect).
        Err(self.memory_exceeded())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return Err(wasmtime::Error::new(LimitExceeded(format!(
                "the plugin grew a table to {desired} elements, more than \
                 limits.table_elements = {} allows",
                self.table_elements
            ))));
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(wasmtime::Error::new(LimitExceeded(format!(
            "the plugin needed a larger table than limits.table_elements = {} allows",
            self.table_elements
        ))))
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// The limit named by an instantiation error of wasmtime's own counting
/// (`resource limit exceeded: instance count too high at 17`), if it is one.
pub fn count_exceeded(e: &wasmtime::Error, limits: &Limits) -> Option<String> {
    let text = format!("{e:#}");
    let at = text.find("resource limit exceeded: ")?;
    let rest = &text[at..];
    let (setting, value, what) = if rest.contains("instance count too high") {
        ("instances", limits.instances, "core module instances")
    } else if rest.contains("table count too high") {
        ("tables", limits.tables, "tables")
    } else if rest.contains("memory count too high") {
        ("memories", MAX_MEMORIES as u32, "memories")
    } else {
        return None;
    };
    Some(if setting == "memories" {
        format!("the plugin has more {what} than the {value} intake allows per invocation")
    } else {
        format!("the plugin has more {what} than limits.{setting} = {value} allows")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            memory_mib: 2,
            table_elements: 100,
            instances: 3,
            tables: 2,
            ..Limits::default()
        }
    }

    fn named(e: wasmtime::Error) -> String {
        e.downcast_ref::<LimitExceeded>()
            .map(|l| l.0.clone())
            .unwrap_or_else(|| panic!("not a limit error: {e:#}"))
    }

    #[test]
    fn growth_past_a_limit_names_the_setting() {
        let mut limiter = InvocationLimiter::new(&limits());
        assert!(limiter.memory_growing(0, 2 << 20, None).unwrap());
        let e = limiter.memory_growing(0, (2 << 20) + 1, None).unwrap_err();
        assert!(named(e).contains("limits.memory_mib = 2 MiB"));
        assert!(limiter.table_growing(0, 100, None).unwrap());
        let e = limiter.table_growing(0, 101, None).unwrap_err();
        assert!(named(e).contains("limits.table_elements = 100"));
        // A memory's own maximum is the plugin's business: grow returns -1.
        assert!(!limiter.memory_growing(0, 1 << 20, Some(1 << 16)).unwrap());
        assert_eq!((limiter.instances(), limiter.tables()), (3, 2));
    }

    #[test]
    fn wasmtime_count_errors_name_the_setting() {
        let e = wasmtime::Error::msg("resource limit exceeded: instance count too high at 4");
        let said = count_exceeded(&e, &limits()).unwrap();
        assert!(said.contains("limits.instances = 3"), "{said}");
        let e = wasmtime::Error::msg("resource limit exceeded: table count too high at 3");
        let said = count_exceeded(&e, &limits()).unwrap();
        assert!(said.contains("limits.tables = 2"), "{said}");
        assert!(count_exceeded(&wasmtime::Error::msg("unreachable"), &limits()).is_none());
    }
}
