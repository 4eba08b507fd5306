//! Tasks read back from memory: the token endpoint looks its task up on every request, and on
//! SQLite each pooled read is three hand-offs to a connection thread (acquire, query, release) —
//! more than the grouped writer now spends per request.
//!
//! Only found tasks are cached. The writer is the only code that changes a stored task, and it
//! empties the cache after committing any batch that could have ([`changes_tasks`]), before it
//! answers. A read that raced with such a commit must not put back what it read: every entry is
//! stored only if no invalidation happened since its read began (a generation number). This
//! holds because the SQLite store is the one writer of its file; several nodes share PostgreSQL
//! instead, which does not use this cache.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use mandate_core::task::Task;

use crate::Op;

/// Most tasks kept; when full, the cache starts over.
const CAPACITY: usize = 16_384;

/// The cache; shared by the store's readers and its writer.
#[derive(Debug, Default)]
pub(crate) struct TaskCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Bumped by every invalidation.
    generation: u64,
    tasks: HashMap<String, Task>,
}

/// A miss: the generation to give back to [`TaskCache::put`] with what the database said.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Miss(u64);

impl TaskCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The guarded code cannot panic; a poisoned lock still holds a consistent map.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached task, or a [`Miss`] to read the database with.
    pub(crate) fn get(&self, id: &str) -> Result<Task, Miss> {
        let inner = self.lock();
        inner.tasks.get(id).cloned().ok_or(Miss(inner.generation))
    }

    /// Keeps `task`, read after `miss`, unless the cache was invalidated since.
    pub(crate) fn put(&self, miss: Miss, task: &Task) {
        let mut inner = self.lock();
        if inner.generation != miss.0 {
            return;
        }
        if inner.tasks.len() >= CAPACITY {
            inner.tasks.clear();
        }
        inner.tasks.insert(task.id.clone(), task.clone());
    }

    /// Forgets every task and makes reads in flight not store theirs.
    pub(crate) fn invalidate(&self) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.tasks.clear();
    }
}

/// Whether committing `ops` may change a task that exists (creating one changes nothing cached:
/// absent tasks are not cached).
pub(crate) fn changes_tasks(ops: &[Op]) -> bool {
    ops.iter().any(|op| {
        matches!(
            op,
            Op::SetTaskStatus { .. } | Op::CompleteTask { .. } | Op::Revoke { .. }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mandate_core::task::TaskStatus;

    fn task(id: &str, status: TaskStatus) -> Task {
        Task {
            id: id.to_owned(),
            agent: "support-v2".to_owned(),
            user: Some("alice".to_owned()),
            user_issuer: None,
            purpose: String::new(),
            input: String::new(),
            status,
            created_at: 1,
            updated_at: 1,
            outcome: None,
            completed_at: None,
        }
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_kept() {
        let cache = TaskCache::default();
        let Err(miss) = cache.get("t1") else {
            panic!("empty cache hit")
        };
        // The writer commits a status change while the read is in flight...
        cache.invalidate();
        // ...so what the read saw (possibly the old status) is not kept.
        cache.put(miss, &task("t1", TaskStatus::Active));
        assert!(cache.get("t1").is_err());

        let Err(miss) = cache.get("t1") else {
            panic!("hit after invalidation")
        };
        cache.put(miss, &task("t1", TaskStatus::Revoked));
        assert_eq!(
            cache.get("t1").ok().map(|t| t.status),
            Some(TaskStatus::Revoked)
        );
        cache.invalidate();
        assert!(cache.get("t1").is_err());
    }

    #[test]
    fn only_ops_that_change_an_existing_task_invalidate() {
        assert!(!changes_tasks(&[Op::EnsureTask(task(
            "t",
            TaskStatus::Active
        ))]));
        assert!(changes_tasks(&[Op::SetTaskStatus {
            id: "t".to_owned(),
            status: TaskStatus::Completed,
            at: 2,
        }]));
    }
}
