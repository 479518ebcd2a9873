//! Fair admission of tenants' work to a shared, bounded resource (SQL
//! query slots, model training).
//!
//! `total` slots are shared by every organization; one organization holds
//! at most `per_tenant` of them at once — and, while other organizations
//! hold or wait for slots, no more than an even split — and queues at most
//! `max_queued` more. When a slot frees, it goes to the queued organization that holds
//! the fewest slots (first come first served among equals), so one tenant's
//! burst of heavy work delays another tenant's query by at most one slot's
//! worth, never by its whole queue. A waiter that gives up (timeout, client
//! gone) leaves the queue; a slot is released when its [`Slot`] is dropped,
//! i.e. when the work that holds it ends — not when a request does.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use schemas::TenantId;
use tokio::sync::oneshot;

/// Why no slot was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The organization already has `max_queued` requests waiting.
    QueueFull { queued: usize },
    /// No slot became free within the wait limit.
    Timeout { waited: Duration },
}

pub struct FairSlots {
    total: usize,
    per_tenant: usize,
    max_queued: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: usize,
    by_tenant: HashMap<TenantId, usize>,
    queue: VecDeque<Waiter>,
    next_id: u64,
}

struct Waiter {
    id: u64,
    tenant: TenantId,
    cap: usize,
    grant: oneshot::Sender<()>,
}

/// A held slot; dropping it frees the slot for the next organization.
pub struct Slot {
    slots: Arc<FairSlots>,
    tenant: TenantId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.slots.lock();
        state.running -= 1;
        if let Some(n) = state.by_tenant.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                state.by_tenant.remove(&self.tenant);
            }
        }
        self.slots.dispatch(&mut state);
    }
}

impl FairSlots {
    pub fn new(total: usize, per_tenant: usize, max_queued: usize) -> Arc<Self> {
        let total = total.max(1);
        Arc::new(Self {
            total,
            per_tenant: per_tenant.clamp(1, total),
            max_queued,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation below leaves the state consistent before any call
        // that could panic, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Slots held by `tenant` now.
    pub fn running(&self, tenant: &TenantId) -> usize {
        self.lock().by_tenant.get(tenant).copied().unwrap_or(0)
    }

    /// Slots held by everyone now.
    pub fn running_total(&self) -> usize {
        self.lock().running
    }

    fn eligible(&self, state: &State, tenant: &TenantId, cap: usize) -> bool {
        state.running < self.total
            && state.by_tenant.get(tenant).copied().unwrap_or(0) < self.share(state, tenant, cap)
    }

    /// The slots `tenant` may hold now: `cap` (its own limit, by default
    /// `per_tenant`), and no more than an
    /// even split of `total` among the organizations holding or waiting
    /// for slots (rounded up, so no slot stays idle while one waits). A
    /// held slot is never taken back, but an organization over its split
    /// gets no more until it is under: with four organizations busy on
    /// four slots, each runs one query — not two for the first to arrive.
    fn share(&self, state: &State, tenant: &TenantId, cap: usize) -> usize {
        let mut busy: HashSet<&TenantId> = state.by_tenant.keys().collect();
        busy.extend(state.queue.iter().map(|w| &w.tenant));
        busy.insert(tenant);
        cap.min(self.total.div_ceil(busy.len()))
    }

    fn take(state: &mut State, tenant: &TenantId) {
        state.running += 1;
        *state.by_tenant.entry(tenant.clone()).or_default() += 1;
    }

    /// Hands free slots to queued waiters: the organization holding the
    /// fewest slots first, then queue order.
    fn dispatch(&self, state: &mut State) {
        while state.running < self.total {
            let pick = state
                .queue
                .iter()
                .enumerate()
                .filter(|(_, w)| self.eligible(state, &w.tenant, w.cap))
                .min_by_key(|(i, w)| (state.by_tenant.get(&w.tenant).copied().unwrap_or(0), *i))
                .map(|(i, _)| i);
            let Some(i) = pick else { break };
            let Some(waiter) = state.queue.remove(i) else {
                break;
            };
            // A waiter that gave up has dropped its receiver: skip it.
            if waiter.grant.send(()).is_ok() {
                Self::take(state, &waiter.tenant);
            }
        }
    }

    /// Waits up to `wait` for a slot for `tenant`.
    pub async fn acquire(
        self: &Arc<Self>,
        tenant: &TenantId,
        wait: Duration,
    ) -> Result<Slot, Refused> {
        self.enter(tenant)?.wait(wait).await
    }

    /// [`Self::acquire`] for a tenant allowed `cap` slots at once (its
    /// plan's) instead of `per_tenant`.
    pub async fn acquire_up_to(
        self: &Arc<Self>,
        tenant: &TenantId,
        cap: usize,
        wait: Duration,
    ) -> Result<Slot, Refused> {
        self.enter_up_to(tenant, cap)?.wait(wait).await
    }

    /// Takes a free slot or a place in the queue, without waiting: a full
    /// queue is refused here, before any work is promised.
    pub fn enter(self: &Arc<Self>, tenant: &TenantId) -> Result<Entry, Refused> {
        self.enter_up_to(tenant, self.per_tenant)
    }

    fn enter_up_to(self: &Arc<Self>, tenant: &TenantId, cap: usize) -> Result<Entry, Refused> {
        let cap = cap.clamp(1, self.total);
        let mut state = self.lock();
        if self.eligible(&state, tenant, cap) {
            // Free capacity with nobody eligible queued (dispatch runs
            // on every release): take it.
            Self::take(&mut state, tenant);
            return Ok(Entry::Ready(self.slot(tenant)));
        }
        let queued = state.queue.iter().filter(|w| &w.tenant == tenant).count();
        if queued >= self.max_queued {
            return Err(Refused::QueueFull { queued });
        }
        let (tx, rx) = oneshot::channel();
        let id = state.next_id;
        state.next_id += 1;
        state.queue.push_back(Waiter {
            id,
            tenant: tenant.clone(),
            cap,
            grant: tx,
        });
        // Whatever happens to the entry from here on, a queued place is
        // removed and a granted slot is returned or released.
        Ok(Entry::Queued(Pending {
            slots: self.clone(),
            tenant: tenant.clone(),
            id,
            rx: Some(rx),
        }))
    }

    fn slot(self: &Arc<Self>, tenant: &TenantId) -> Slot {
        Slot {
            slots: self.clone(),
            tenant: tenant.clone(),
        }
    }
}

/// A slot, or a place in the queue for one.
pub enum Entry {
    Ready(Slot),
    Queued(Pending),
}

impl Entry {
    /// The slot, waiting up to `wait` for it if queued.
    pub async fn wait(self, wait: Duration) -> Result<Slot, Refused> {
        match self {
            Entry::Ready(slot) => Ok(slot),
            Entry::Queued(mut pending) => {
                let Some(rx) = pending.rx.as_mut() else {
                    return Err(Refused::Timeout { waited: wait });
                };
                match tokio::time::timeout(wait, rx).await {
                    Ok(Ok(())) => {
                        pending.rx = None;
                        Ok(pending.slots.slot(&pending.tenant))
                    }
                    _ => Err(Refused::Timeout { waited: wait }),
                }
            }
        }
    }
}

/// A queued request; on drop (timeout or cancellation) it leaves the queue,
/// or frees the slot it was granted in the meantime.
pub struct Pending {
    slots: Arc<FairSlots>,
    tenant: TenantId,
    id: u64,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        let mut state = self.slots.lock();
        if let Some(i) = state.queue.iter().position(|w| w.id == self.id) {
            state.queue.remove(i);
            return;
        }
        drop(state);
        // Granted after all: hand it back.
        if rx.try_recv().is_ok() {
            drop(Slot {
                slots: self.slots.clone(),
                tenant: self.tenant.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

    const LONG: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn one_tenant_cannot_take_every_slot() {
        let slots = FairSlots::new(4, 2, 16);
        let a1 = slots.acquire(&t("a"), LONG).await.unwrap();
        let _a2 = slots.acquire(&t("a"), LONG).await.unwrap();
        // A's third waits although two slots are free…
        let a3 = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(&t("a"), LONG).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(slots.running(&t("a")), 2);
        // …while B gets one at once.
        let _b = tokio::time::timeout(Duration::from_millis(100), slots.acquire(&t("b"), LONG))
            .await
            .expect("b is not kept waiting")
            .unwrap();
        drop(a1);
        a3.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_tenant_holding_fewest() {
        let slots = FairSlots::new(2, 2, 16);
        let a1 = slots.acquire(&t("a"), LONG).await.unwrap();
        let _a2 = slots.acquire(&t("a"), LONG).await.unwrap();
        // A queues first, B second; B holds nothing, so B goes first.
        let (tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        for name in ["a", "b"] {
            let (slots, tx) = (slots.clone(), tx.clone());
            tokio::spawn(async move {
                let slot = slots.acquire(&t(name), LONG).await.unwrap();
                tx.send(name).unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(slot);
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(a1);
        assert_eq!(order.recv().await, Some("b"));
    }

    #[tokio::test]
    async fn busy_organizations_get_an_even_split_of_the_slots() {
        let slots = FairSlots::new(4, 2, 16);
        let heavy = [
            slots.acquire(&t("heavy"), LONG).await.unwrap(),
            slots.acquire(&t("heavy"), LONG).await.unwrap(),
        ];
        let mut light = Vec::new();
        for name in ["l1", "l2"] {
            light.push(slots.acquire(&t(name), LONG).await.unwrap());
        }
        // All four taken; l3 and heavy's third both wait.
        let (tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        for name in ["heavy", "l3"] {
            let (slots, tx) = (slots.clone(), tx.clone());
            tokio::spawn(async move {
                let slot = slots.acquire(&t(name), LONG).await.unwrap();
                tx.send(name).unwrap();
                tokio::time::sleep(LONG).await;
                drop(slot);
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // One of heavy's queries ends: four organizations are busy, so its
        // split is one slot, which it still holds; l3 gets the freed one.
        let [first, second] = heavy;
        drop(first);
        assert_eq!(order.recv().await, Some("l3"));
        assert_eq!(slots.running(&t("heavy")), 1);
        // l2 goes idle: three organizations are busy, the split is two,
        // and heavy's waiting query gets the freed slot.
        drop(light.pop());
        assert_eq!(order.recv().await, Some("heavy"));
        assert_eq!(slots.running(&t("heavy")), 2);
        drop(second);
    }

    #[tokio::test]
    async fn queue_limit_and_timeout_refuse_and_leave_nothing_behind() {
        let slots = FairSlots::new(1, 1, 1);
        let held = slots.acquire(&t("a"), LONG).await.unwrap();
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move {
                slots
                    .acquire(&t("a"), Duration::from_millis(50))
                    .await
                    .map(|_| ())
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(matches!(
            slots.acquire(&t("a"), LONG).await.map(|_| ()),
            Err(Refused::QueueFull { queued: 1 })
        ));
        assert!(matches!(
            waiting.await.unwrap(),
            Err(Refused::Timeout { .. })
        ));
        drop(held);
        assert_eq!(slots.running_total(), 0);
        // A cancelled waiter leaves the queue too.
        let held = slots.acquire(&t("a"), LONG).await.unwrap();
        let cancelled = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(&t("b"), LONG).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        cancelled.abort();
        let _ = cancelled.await;
        drop(held);
        assert_eq!(slots.running_total(), 0);
        assert!(slots.acquire(&t("c"), LONG).await.is_ok());
    }
}
