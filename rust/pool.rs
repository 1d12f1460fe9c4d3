//! The crate-owned rayon pools, one per requested thread count.
//!
//! `n_jobs` wins, then `FASTCORE_AD_NUM_THREADS`, then the number of logical CPUs. The pools of
//! the last few thread counts used are cached; an older one is dropped (its threads exit once
//! no call runs in it), so a caller sweeping `n_jobs` does not pile up idle threads. After
//! `fork()` the child's pool threads are gone, so `reset_after_fork` forgets the inherited
//! pools (leaking them on purpose: dropping would join threads that do not exist).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

/// Pools kept for reuse, the most recently used first in line to stay.
const CACHED_POOLS: usize = 4;

/// Each cached pool with the tick of its last use.
#[derive(Default)]
struct PoolCache {
    pools: HashMap<usize, (Arc<ThreadPool>, u64)>,
    tick: u64,
}

impl PoolCache {
    /// The pool of `threads` threads, started if needed (None if the OS refuses threads).
    fn get(&mut self, threads: usize) -> Option<Arc<ThreadPool>> {
        self.tick += 1;
        if let Some((pool, used)) = self.pools.get_mut(&threads) {
            *used = self.tick;
            return Some(pool.clone());
        }
        let pool = Arc::new(
            ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("fastcore-ad-{i}"))
                .build()
                .ok()?,
        );
        if self.pools.len() >= CACHED_POOLS {
            let oldest = self
                .pools
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(&k, _)| k);
            if let Some(k) = oldest {
                // Calls still running in it hold their own handle; its threads exit after them.
                self.pools.remove(&k);
            }
        }
        self.pools.insert(threads, (pool.clone(), self.tick));
        Some(pool)
    }
}

fn pools() -> &'static Mutex<PoolCache> {
    static POOLS: OnceLock<Mutex<PoolCache>> = OnceLock::new();
    POOLS.get_or_init(|| Mutex::new(PoolCache::default()))
}

/// Resolve the thread count: explicit `n_jobs` (<= 0 means "all CPUs"), then the environment.
pub fn resolve_threads(n_jobs: Option<i64>) -> usize {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let from_env = || {
        std::env::var("FASTCORE_AD_NUM_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    // More threads than a few per CPU only add overhead, and a huge request (n_jobs=10**6)
    // would try to start that many OS threads.
    let most = cpus.saturating_mul(4);
    match n_jobs.or_else(from_env) {
        Some(n) if n > 0 => (n.min(most as i64)) as usize,
        Some(n) if n < 0 => {
            // scikit-learn convention: -1 = all CPUs, -2 = all but one, ...
            let k = cpus as i64 + 1 + n;
            k.max(1) as usize
        }
        _ => cpus,
    }
}

/// Run `f` inside the pool with the resolved number of threads.
pub fn install<R: Send>(n_jobs: Option<i64>, f: impl FnOnce() -> R + Send) -> R {
    let threads = resolve_threads(n_jobs);
    let pool = lock_cache().get(threads);
    match pool {
        Some(p) => p.install(f),
        // A pool that cannot start threads still gives a correct (sequential) answer.
        None => f(),
    }
}

thread_local! {
    /// The cache lock held by the forking thread across `fork()` (see `before_fork`).
    static HELD_ACROSS_FORK: std::cell::RefCell<Option<MutexGuard<'static, PoolCache>>> =
        const { std::cell::RefCell::new(None) };
}

fn lock_cache() -> MutexGuard<'static, PoolCache> {
    match pools().lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Take the cache lock before `fork()`, so the child never inherits it held by a thread that
/// does not exist there (it would wait forever); released by `after_fork_in_parent` and
/// `reset_after_fork`, which run in the forking thread.
pub fn before_fork() {
    let guard = lock_cache();
    HELD_ACROSS_FORK.with(|held| *held.borrow_mut() = Some(guard));
}

/// Release the lock `before_fork` took.
pub fn after_fork_in_parent() {
    HELD_ACROSS_FORK.with(|held| held.borrow_mut().take());
}

/// Forget the pools inherited through `fork()`; called in the child (from Python's
/// `os.register_at_fork`), with the lock `before_fork` took or, without it, taking it.
pub fn reset_after_fork() {
    let mut cache = HELD_ACROSS_FORK
        .with(|held| held.borrow_mut().take())
        .unwrap_or_else(lock_cache);
    for (_, (pool, _)) in cache.pools.drain() {
        std::mem::forget(pool);
    }
}

/// Bytes of memory still available to the process (Linux `MemAvailable`), if known: sizes that
/// an input implies are checked against it before allocating.
pub fn available_memory() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The thread counts whose pools are cached now, in increasing order.
pub fn cached_thread_counts() -> Vec<usize> {
    let mut counts: Vec<usize> = lock_cache().pools.keys().copied().collect();
    counts.sort_unstable();
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_of_thread_counts_keeps_the_last_few_pools() {
        // Distinct thread counts this machine resolves (requests are capped at 4 per CPU).
        let mut used: Vec<usize> = Vec::new();
        for request in 1..=(CACHED_POOLS as i64 + 3) {
            let threads = install(Some(request), rayon::current_num_threads);
            assert_eq!(threads, resolve_threads(Some(request)));
            used.retain(|&t| t != threads);
            used.push(threads);
        }
        // Reusing an older count makes it the most recent, so it stays and another goes.
        let again = used[used.len().saturating_sub(CACHED_POOLS)];
        assert_eq!(
            install(Some(again as i64), rayon::current_num_threads),
            again
        );
        used.retain(|&t| t != again);
        used.push(again);
        // A count evicted earlier comes back: the least recently used goes, not `again`.
        if used.len() > CACHED_POOLS {
            let back = used[0];
            assert_eq!(install(Some(back as i64), rayon::current_num_threads), back);
            used.remove(0);
            used.push(back);
        }
        let mut want: Vec<usize> = used[used.len().saturating_sub(CACHED_POOLS)..].to_vec();
        want.sort_unstable();
        assert_eq!(cached_thread_counts(), want);
        assert!(want.contains(&again));
    }
}
