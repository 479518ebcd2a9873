//! Execution lanes: each organization's analyst queries run on threads of
//! their own, and the operating system shares the cores between them.
//!
//! Why: tokio schedules tasks cooperatively. On one runtime shared by every
//! organization, a heavy query's operator that computes for a second inside
//! one poll (a hash join's build, a sort) holds a worker thread for that
//! second, and every other organization's light queries wait behind it —
//! `benches/sql_concurrency.sh` measured one organization's heavy queries
//! multiplying the others' p99 by 4.4–6.3× that way, and CPU "turns" taken
//! per poll did not help (docs/benchmarks.md). The kernel's scheduler
//! preempts: given one small runtime per organization with queries in
//! flight (its *lane*, `threads` workers), organizations busy at once get
//! about equal CPU however heavy their queries are, and an organization's
//! queries compete only with each other. This is the thread-per-workload
//! isolation ClickHouse and Quickwit use for queries, keyed by tenant.
//!
//! Threads stay bounded: a lane is in use only while one of its
//! organization's queries holds a query slot or plans a statement, so lanes
//! in use are at most the slots plus the statements being described; idle
//! lanes are kept for [`IDLE`] (a dashboard's next query reuses its
//! threads), at most `keep_idle` of them, the least recently used retired
//! first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use schemas::TenantId;
use tokio::runtime::{Handle, Runtime};

use super::guard::SQL_THREAD_STACK_BYTES;

/// How long an unused lane keeps its threads.
pub const IDLE: Duration = Duration::from_secs(30);

pub struct Lanes {
    threads: usize,
    keep_idle: usize,
    lanes: Mutex<HashMap<TenantId, Lane>>,
}

struct Lane {
    runtime: Runtime,
    users: usize,
    last_used: Instant,
}

/// A use of an organization's lane: work spawned on [`Self::handle`] runs
/// on its threads, which are not retired while this lives.
pub struct InLane {
    lanes: Arc<Lanes>,
    tenant: TenantId,
    handle: Handle,
}

impl InLane {
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for InLane {
    fn drop(&mut self) {
        if let Some(lane) = self.lanes.lock().get_mut(&self.tenant) {
            lane.users -= 1;
            lane.last_used = Instant::now();
        }
    }
}

impl Lanes {
    /// Lanes of `threads` workers each, keeping at most `keep_idle` unused.
    pub fn new(threads: usize, keep_idle: usize) -> Arc<Self> {
        Arc::new(Self {
            threads: threads.max(1),
            keep_idle,
            lanes: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TenantId, Lane>> {
        // No mutation below can panic half-way.
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `tenant`'s lane, started if it has none.
    pub fn enter(self: &Arc<Self>, tenant: &TenantId) -> std::io::Result<InLane> {
        let now = Instant::now();
        let mut lanes = self.lock();
        if !lanes.contains_key(tenant) {
            let runtime = lane_runtime(self.threads)?;
            lanes.insert(
                tenant.clone(),
                Lane {
                    runtime,
                    users: 0,
                    last_used: now,
                },
            );
        }
        let lane = lanes.get_mut(tenant).expect("inserted above");
        lane.users += 1;
        let handle = lane.runtime.handle().clone();
        // In use now, so never among the retired.
        let retired = self.retire(&mut lanes, now);
        drop(lanes);
        // Outside the lock: nothing of theirs runs any more, so this only
        // signals their threads to exit.
        for runtime in retired {
            runtime.shutdown_background();
        }
        Ok(InLane {
            lanes: self.clone(),
            tenant: tenant.clone(),
            handle,
        })
    }

    /// Takes out the unused lanes idle for [`IDLE`] and the least recently
    /// used beyond `keep_idle`.
    fn retire(&self, lanes: &mut HashMap<TenantId, Lane>, now: Instant) -> Vec<Runtime> {
        let mut idle: Vec<(Instant, TenantId)> = lanes
            .iter()
            .filter(|(_, lane)| lane.users == 0)
            .map(|(tenant, lane)| (lane.last_used, tenant.clone()))
            .collect();
        idle.sort();
        let excess = idle.len().saturating_sub(self.keep_idle);
        idle.into_iter()
            .enumerate()
            .filter(|(i, (used, _))| *i < excess || now.duration_since(*used) >= IDLE)
            .filter_map(|(_, (_, tenant))| lanes.remove(&tenant).map(|lane| lane.runtime))
            .collect()
    }

    /// Lanes that have threads now (in use or idle).
    #[cfg(test)]
    fn count(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside async code (where
        // an engine may be dropped); letting the threads go does not.
        let lanes = std::mem::take(&mut *self.lock());
        for (_, lane) in lanes {
            lane.runtime.shutdown_background();
        }
    }
}

/// A lane's runtime, with stacks sized for the deepest expression
/// [`super::guard::check_statement`] admits (plans recurse as deep as the
/// expressions they hold).
fn lane_runtime(threads: usize) -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("securenet-sql")
        .thread_stack_size(SQL_THREAD_STACK_BYTES)
        .max_blocking_threads(16)
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

    fn thread_of(lane: &InLane) -> std::thread::ThreadId {
        let (tx, rx) = std::sync::mpsc::channel();
        lane.handle().spawn(async move {
            tx.send(std::thread::current().id()).unwrap();
        });
        rx.recv().unwrap()
    }

    #[test]
    fn organizations_run_on_their_own_threads() {
        let lanes = Lanes::new(1, 4);
        let a = lanes.enter(&t("a")).unwrap();
        let b = lanes.enter(&t("b")).unwrap();
        let a_again = lanes.enter(&t("a")).unwrap();
        assert_ne!(thread_of(&a), thread_of(&b));
        assert_eq!(
            thread_of(&a),
            thread_of(&a_again),
            "one lane per organization"
        );
        assert_eq!(lanes.count(), 2);
    }

    #[test]
    fn a_busy_lane_does_not_hold_up_another() {
        let lanes = Lanes::new(1, 4);
        let busy = lanes.enter(&t("heavy")).unwrap();
        let (release, hold) = std::sync::mpsc::channel::<()>();
        // Blocks its lane's only thread, as a long poll would.
        busy.handle().spawn(async move {
            let _ = hold.recv();
        });
        let light = lanes.enter(&t("light")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        light.handle().spawn(async move { tx.send(()).unwrap() });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the light organization's work ran while the heavy lane was blocked");
        release.send(()).unwrap();
    }

    #[test]
    fn unused_lanes_beyond_the_idle_limit_are_retired_in_use_ones_never() {
        let lanes = Lanes::new(1, 1);
        let in_use = lanes.enter(&t("a")).unwrap();
        drop(lanes.enter(&t("b")).unwrap());
        drop(lanes.enter(&t("c")).unwrap());
        // Entering retires b (older of the two idle, one kept) and keeps a.
        let d = lanes.enter(&t("d")).unwrap();
        assert_eq!(lanes.count(), 3, "a (in use), c (idle), d");
        let _ = thread_of(&in_use);
        drop((in_use, d));
        let _e = lanes.enter(&t("e")).unwrap();
        assert_eq!(lanes.count(), 2, "one idle lane kept beside e");
    }

    #[tokio::test]
    async fn dropping_the_lanes_inside_async_code_does_not_panic() {
        let lanes = Lanes::new(1, 4);
        let lane = lanes.enter(&t("a")).unwrap();
        let handle = lane.handle().clone();
        assert_eq!(handle.spawn(async { 7 }).await.unwrap(), 7);
        drop(lane);
        drop(lanes);
    }
}
