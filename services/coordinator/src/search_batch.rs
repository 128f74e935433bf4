//! Batched concurrent search: REST searches of one gallery index that arrive
//! together are gathered into one `Gallery::search` call (one FAISS call per
//! distinct `k` in the batch), and each caller gets its own rows back.
//!
//! How a batch forms ([`Gatherer`]): the first search of an idle index
//! starts a drainer task for it. The drainer takes what is waiting as one
//! batch as soon as one of these holds:
//! * `max_batch` searches are waiting;
//! * as many searches are waiting as the previous batch answered (under a
//!   steady load those callers come back together, so waiting longer only
//!   adds latency);
//! * the oldest waiting search has waited `max_wait`.
//!
//! Up to `max_in_flight` batches of one index run at once (by default four
//! per core, each on one FAISS thread). Searches that arrive while that many
//! run wait for one to end and form the next batch, so under load batching
//! happens without any deliberate wait, and no search is held back longer
//! than `max_wait` plus the batch before it.
//!
//! Lock order: a batch holds no lock of its own while it waits for the
//! gallery's lock, takes it once (validation, the operating point and the
//! FAISS call all happen under it) and releases it before answering.
//! Batches share the lock (FAISS searches a CPU index from several threads
//! at once); one that must calibrate a threshold first takes it alone for
//! that. The gallery's lock is fair (first come, first served), so an
//! enrolment that asks for it while batches run writes right after them,
//! and a search never waits behind an index write longer than one batch
//! plus that write.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use osprey_core::fusion::ScoreCalibration;
use osprey_core::{Error, Modality};
use osprey_index::{OperatingPoint, SubjectCandidate, known_operating_point, operating_point};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::service::Coordinator;

/// How long and how large batches may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Longest a search waits for others to join its batch (counted from
    /// its arrival; zero: it only waits while an earlier batch runs).
    pub max_wait: Duration,
    /// Most searches in one batch (at least 1).
    pub max_batch: usize,
    /// Most batches of one key running at once (at least 1).
    pub max_in_flight: usize,
}

/// A drainer with nothing to do waits this long for more work before it
/// ends, so the batch size it learnt carries over short pauses.
const LINGER: Duration = Duration::from_millis(50);

/// One waiting search.
struct Waiting<Q, A> {
    ask: Q,
    since: Instant,
    reply: oneshot::Sender<A>,
}

/// One key's queue (for searches: one gallery index).
struct Queue<Q, A> {
    state: Mutex<QueueState<Q, A>>,
    /// Signalled on each arrival.
    arrived: Notify,
}

struct QueueState<Q, A> {
    pending: Vec<Waiting<Q, A>>,
    /// Whether a drainer task is running for this queue.
    draining: bool,
    /// Searches the previous batch answered: the callers expected back.
    last_batch: usize,
}

/// Gathers concurrent asks per key into batches, each run by the runner
/// that started the key's drainer (the runner answers the asks in order).
pub struct Gatherer<Q, A> {
    limits: BatchLimits,
    queues: Mutex<HashMap<String, Arc<Queue<Q, A>>>>,
}

impl<Q: Send + 'static, A: Send + 'static> Gatherer<Q, A> {
    pub fn new(limits: BatchLimits) -> Self {
        let limits =
            BatchLimits { max_batch: limits.max_batch.max(1), max_in_flight: limits.max_in_flight.max(1), ..limits };
        Gatherer { limits, queues: Mutex::new(HashMap::new()) }
    }

    /// Queues `ask` under `key` and waits for its answer. `run` answers one
    /// batch (its answers in the order of its asks); it is used when this
    /// call starts the key's drainer, so every caller of one key must pass
    /// an equivalent runner. `None`: the runner gave fewer answers than asks.
    pub async fn submit<F, Fut>(self: &Arc<Self>, key: &str, ask: Q, run: F) -> Option<A>
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<A>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let start = {
            // Map, then queue: the drainer's exit takes them in this order too.
            let mut queues = self.queues.lock().expect("batch queues");
            let queue = Arc::clone(queues.entry(key.to_string()).or_insert_with(|| {
                Arc::new(Queue {
                    state: Mutex::new(QueueState { pending: Vec::new(), draining: false, last_batch: 0 }),
                    arrived: Notify::new(),
                })
            }));
            let mut state = queue.state.lock().expect("batch queue");
            state.pending.push(Waiting { ask, since: Instant::now(), reply });
            let start = !state.draining;
            state.draining = true;
            drop(state);
            queue.arrived.notify_one();
            start.then_some(queue)
        };
        if let Some(queue) = start {
            tokio::spawn(Arc::clone(self).drain(key.to_string(), queue, run));
        }
        answer.await.ok()
    }

    /// Runs batches of `queue`, up to `max_in_flight` at once, until it
    /// stays empty for [`LINGER`] with none running.
    async fn drain<F, Fut>(self: Arc<Self>, key: String, queue: Arc<Queue<Q, A>>, run: F)
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<A>> + Send + 'static,
    {
        let slots = Arc::new(tokio::sync::Semaphore::new(self.limits.max_in_flight));
        loop {
            // A slot first: what arrives meanwhile joins the next batch.
            let slot = Arc::clone(&slots).acquire_owned().await.expect("the drainer's semaphore is never closed");
            let idle = || slots.available_permits() + 1 == self.limits.max_in_flight;
            let Some(batch) = self.gather(&key, &queue, idle).await else { return };
            let n = batch.len();
            let (asks, replies): (Vec<Q>, Vec<oneshot::Sender<A>>) =
                batch.into_iter().map(|w| (w.ask, w.reply)).unzip();
            let answering = run(asks);
            let (key, queue) = (key.clone(), Arc::clone(&queue));
            tokio::spawn(async move {
                // A runner that panics fails its batch, not the queue: its
                // callers get no answer (an error) and the drainer goes on.
                let answers = std::panic::AssertUnwindSafe(answering).catch_unwind().await.unwrap_or_else(|_| {
                    tracing::error!("a search batch of `{key}` panicked");
                    Vec::new()
                });
                // Learnt before answering: the callers may come back at once.
                queue.state.lock().expect("batch queue").last_batch = n;
                drop(slot);
                // A caller that went away (client disconnected) just misses its answer.
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
            });
        }
    }

    /// Waits for the next batch; `None` when the queue stayed empty for
    /// [`LINGER`] while `idle` (no batch running) and the drainer has been
    /// retired.
    async fn gather(&self, key: &str, queue: &Queue<Q, A>, idle: impl Fn() -> bool) -> Option<Vec<Waiting<Q, A>>> {
        loop {
            let wake_at = {
                let mut state = queue.state.lock().expect("batch queue");
                match state.pending.first() {
                    None => Instant::now() + LINGER,
                    Some(oldest) => {
                        let deadline = oldest.since + self.limits.max_wait;
                        let expected = state.last_batch.clamp(1, self.limits.max_batch);
                        if state.pending.len() >= expected || Instant::now() >= deadline {
                            let n = state.pending.len().min(self.limits.max_batch);
                            return Some(state.pending.drain(..n).collect());
                        }
                        deadline
                    }
                }
            };
            // A notification sent since the state was read is kept as a
            // permit, so an arrival between the two is not missed.
            let timed_out = tokio::time::timeout_at(wake_at, queue.arrived.notified()).await.is_err();
            if timed_out && idle() && self.retire_if_idle(key, queue) {
                return None;
            }
        }
    }

    /// Ends the drainer if nothing waits (under the map's lock, so no
    /// search can be queued on a retired queue).
    fn retire_if_idle(&self, key: &str, queue: &Queue<Q, A>) -> bool {
        let mut queues = self.queues.lock().expect("batch queues");
        let mut state = queue.state.lock().expect("batch queue");
        if !state.pending.is_empty() {
            return false;
        }
        state.draining = false;
        queues.remove(key);
        true
    }
}

// ------------------------------------------------------------ gallery search

/// One caller's probes for one gallery index, with its search options.
pub struct SearchAsk {
    /// The index's modality (for messages).
    pub modality: Modality,
    /// The probes' embeddings (each checked against the index's width
    /// before it joins the batch's FAISS call).
    pub embeddings: Vec<Vec<f32>>,
    /// Subjects wanted per probe (at least 1).
    pub k: usize,
    /// A raw threshold, else calibrated for `fpir` or the gallery's own.
    pub threshold: Option<f32>,
    pub fpir: Option<f64>,
}

/// One caller's answer from its batch.
pub struct SearchAnswer {
    /// The decision threshold and where it came from.
    pub op: OperatingPoint,
    /// The index's raw score → LLR mapping at that threshold (for fusion).
    pub calibration: ScoreCalibration,
    /// Up to `k` subjects per probe, best first, in the order of the probes.
    pub candidates: Vec<Vec<SubjectCandidate>>,
}

/// `Ok(None)`: the index does not exist.
pub type SearchOutcome = Result<Option<SearchAnswer>, ApiError>;

/// The coordinator's search batcher: one queue per gallery index.
pub struct SearchBatcher {
    gatherer: Arc<Gatherer<SearchAsk, SearchOutcome>>,
    /// FAISS (OpenMP) threads for one batch's search; 0: FAISS's default
    /// (every core).
    threads: usize,
}

impl SearchBatcher {
    pub fn new(limits: BatchLimits, threads: usize) -> SearchBatcher {
        SearchBatcher { gatherer: Arc::new(Gatherer::new(limits)), threads }
    }

    /// Searches index `name` of `c` with `ask`, batched with the concurrent
    /// searches of the same index.
    pub async fn search(&self, c: &Arc<Coordinator>, name: &str, ask: SearchAsk) -> SearchOutcome {
        let runner = {
            let (c, name, threads) = (Arc::clone(c), name.to_string(), self.threads);
            move |asks: Vec<SearchAsk>| {
                let (c, name) = (Arc::clone(&c), name.clone());
                async move { search_batch(&c, &name, asks, threads).await }
            }
        };
        self.gatherer
            .submit(name, ask, runner)
            .await
            .ok_or_else(|| ApiError::from(Error::internal("the search batch ended without an answer")))?
    }
}

/// A search's threshold options, bit for bit: (threshold, FPIR).
type OpKey = (Option<u32>, Option<u64>);

fn op_key(ask: &SearchAsk) -> OpKey {
    (ask.threshold.map(f32::to_bits), ask.fpir.map(f64::to_bits))
}

/// Answers one batch of searches of index `name`: each ask is checked
/// (width, finite values) and given its operating point on its own, so a
/// bad one fails alone; the others are searched together, one FAISS call
/// per distinct `k`, under a shared lock of the gallery (batches of one
/// index run at once). An ask that needs its threshold calibrated now (an
/// FPIR given, or an uncalibrated gallery) has the batch take the lock
/// alone while it calibrates.
async fn search_batch(c: &Coordinator, name: &str, asks: Vec<SearchAsk>, threads: usize) -> Vec<SearchOutcome> {
    let n = asks.len();
    let fail = |e: Error| (0..n).map(|_| Err(ApiError::from(e.clone()))).collect();
    let guard = match c.read_gallery(name).await {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    // Operating points calibrated now, by threshold options.
    let mut calibrated: Vec<(OpKey, Result<OperatingPoint, Error>)> = Vec::new();
    let must_calibrate = |g: &osprey_index::Gallery, ask: &SearchAsk| {
        matches!(known_operating_point(g, ask.threshold, ask.fpir), Ok(None))
    };
    let guard = match guard.as_ref() {
        Some(g) if asks.iter().any(|a| must_calibrate(g, a)) => {
            drop(guard);
            let mut write = match c.lock_gallery(name).await {
                Ok(g) => g,
                Err(e) => return fail(e),
            };
            if let Some(g) = write.as_mut() {
                for ask in &asks {
                    let key = op_key(ask);
                    if must_calibrate(g, ask) && !calibrated.iter().any(|(k, _)| *k == key) {
                        let op = operating_point(&c.root, g, ask.threshold, ask.fpir).await;
                        calibrated.push((key, op));
                    }
                }
            }
            write.downgrade()
        }
        _ => guard,
    };
    let Some(g) = guard.as_ref() else {
        return (0..n).map(|_| Ok(None)).collect();
    };
    let dim = g.manifest().dim;
    let mut out: Vec<Option<SearchOutcome>> = (0..n).map(|_| None).collect();
    let mut answers: Vec<Option<(OperatingPoint, ScoreCalibration)>> = (0..n).map(|_| None).collect();
    for (i, ask) in asks.iter().enumerate() {
        if let Some(e) = ask.embeddings.iter().find(|e| e.len() != dim) {
            out[i] = Some(Err(ApiError::bad_request(format!(
                "{} embedding has {} values; `{name}` holds {dim}-d templates",
                ask.modality,
                e.len()
            ))));
            continue;
        }
        if let Err(e) = ask.embeddings.iter().try_for_each(|e| osprey_core::validate_embedding(e, dim, "probe")) {
            out[i] = Some(Err(e.into()));
            continue;
        }
        let op = match calibrated.iter().find(|(k, _)| *k == op_key(ask)) {
            Some((_, op)) => op.clone(),
            None => known_operating_point(g, ask.threshold, ask.fpir).and_then(|op| {
                op.ok_or_else(|| Error::internal("the gallery's threshold was not calibrated for this search"))
            }),
        };
        match op {
            Ok(op) => {
                let calibration = g.score_calibration_at(op.threshold);
                answers[i] = Some((op, calibration));
            }
            Err(e) => out[i] = Some(Err(e.into())),
        }
    }
    // The valid asks with probes, by k: one FAISS call each.
    let mut by_k: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, ask) in asks.iter().enumerate() {
        if answers[i].is_some() && !ask.embeddings.is_empty() {
            by_k.entry(ask.k.max(1)).or_default().push(i);
        }
    }
    let groups: Vec<(usize, Vec<usize>, Vec<f32>)> = by_k
        .into_iter()
        .map(|(k, members)| {
            let queries = members.iter().flat_map(|&i| asks[i].embeddings.iter().flatten().copied()).collect();
            (k, members, queries)
        })
        .collect();
    // FAISS runs off the async workers (they keep serving HTTP meanwhile),
    // with the gallery's shared lock held across, on `threads` threads.
    let searched = tokio::task::spawn_blocking(move || {
        let _threads = (threads > 0).then(|| osprey_index::scoped_faiss_threads(threads));
        let g = guard.as_ref().expect("checked above");
        let results: Vec<_> =
            groups.into_iter().map(|(k, members, queries)| (members, g.search(&queries, k))).collect();
        drop(guard);
        results
    })
    .await;
    let searched = match searched {
        Ok(s) => s,
        Err(e) => {
            let e = Error::internal(format!("gallery search panicked: {e}"));
            return (0..n).map(|i| out[i].take().unwrap_or_else(|| Err(e.clone().into()))).collect();
        }
    };
    let mut candidates: Vec<Vec<Vec<SubjectCandidate>>> = (0..n).map(|_| Vec::new()).collect();
    for (members, result) in searched {
        match result {
            Ok(rows) => {
                let mut rows = rows.into_iter();
                for &i in &members {
                    candidates[i] = rows.by_ref().take(asks[i].embeddings.len()).collect();
                }
            }
            Err(e) => {
                for &i in &members {
                    out[i] = Some(Err(e.clone().into()));
                    answers[i] = None;
                }
            }
        }
    }
    (0..n)
        .map(|i| match (out[i].take(), answers[i].take()) {
            (Some(done), _) => done,
            (None, Some((op, calibration))) => {
                Ok(Some(SearchAnswer { op, calibration, candidates: std::mem::take(&mut candidates[i]) }))
            }
            (None, None) => Err(Error::internal("a search of the batch got no answer").into()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Answers = std::pin::Pin<Box<dyn Future<Output = Vec<usize>> + Send>>;
    type Batches = Arc<Mutex<Vec<Vec<usize>>>>;

    /// An ask whose batch waits for a permit of the recorder's gate.
    const GATED: usize = 1000;

    /// A gatherer whose runner records each batch's asks and answers each
    /// ask with itself times ten, after `work` (and, for a batch holding
    /// [`GATED`], after a permit of the returned gate).
    #[allow(clippy::type_complexity)]
    fn recorder(
        limits: BatchLimits,
        work: Duration,
    ) -> (
        Arc<Gatherer<usize, usize>>,
        Batches,
        Arc<tokio::sync::Semaphore>,
        impl Fn(Vec<usize>) -> Answers + Clone + Send + Sync + 'static,
    ) {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (seen, gated) = (Arc::clone(&batches), Arc::clone(&gate));
        let run = move |asks: Vec<usize>| {
            let (seen, gated) = (Arc::clone(&seen), Arc::clone(&gated));
            Box::pin(async move {
                seen.lock().unwrap().push(asks.clone());
                if asks.contains(&GATED) {
                    gated.acquire().await.unwrap().forget();
                }
                tokio::time::sleep(work).await;
                asks.iter().map(|a| a * 10).collect()
            }) as Answers
        };
        (Arc::new(Gatherer::new(limits)), batches, gate, run)
    }

    /// Asks waiting under `key`.
    fn waiting(g: &Gatherer<usize, usize>, key: &str) -> usize {
        g.queues.lock().unwrap().get(key).map_or(0, |q| q.state.lock().unwrap().pending.len())
    }

    /// Polls until `cond` holds (at most 10 s).
    async fn until(cond: impl Fn() -> bool) {
        let t = Instant::now();
        while !cond() {
            assert!(t.elapsed() < Duration::from_secs(10), "timed out");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Submits `ask` under `key` in a task of its own.
    fn spawn_ask(
        g: &Arc<Gatherer<usize, usize>>,
        key: &'static str,
        ask: usize,
        run: impl Fn(Vec<usize>) -> Answers + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<Option<usize>> {
        let g = Arc::clone(g);
        tokio::spawn(async move { g.submit(key, ask, run).await })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_asks_are_gathered_and_each_gets_its_own_answer() {
        let limits = BatchLimits { max_wait: Duration::from_millis(200), max_batch: 64, max_in_flight: 1 };
        let (g, batches, gate, run) = recorder(limits, Duration::ZERO);
        // The first ask runs alone (nothing was learnt yet); the 20 asked
        // while it runs are answered by the next batch, together.
        let first = spawn_ask(&g, "a", GATED, run.clone());
        until(|| batches.lock().unwrap().len() == 1).await;
        let asks: Vec<_> = (0..20).map(|i| spawn_ask(&g, "a", i, run.clone())).collect();
        until(|| waiting(&g, "a") == 20).await;
        gate.add_permits(1);
        assert_eq!(first.await.unwrap(), Some(GATED * 10));
        for (i, a) in asks.into_iter().enumerate() {
            assert_eq!(a.await.unwrap(), Some(i * 10), "ask {i} got another's answer");
        }
        let batches = batches.lock().unwrap().clone();
        assert_eq!(batches.len(), 2, "{batches:?}");
        assert_eq!(batches[0], vec![GATED]);
        let mut second = batches[1].clone();
        second.sort();
        assert_eq!(second, (0..20).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn up_to_max_in_flight_batches_run_at_once() {
        let limits = BatchLimits { max_wait: Duration::ZERO, max_batch: 64, max_in_flight: 2 };
        let (g, batches, gate, run) = recorder(limits, Duration::ZERO);
        // Two gated batches run side by side: the second does not wait
        // for the first.
        let first = spawn_ask(&g, "a", GATED, run.clone());
        until(|| batches.lock().unwrap().len() == 1).await;
        let second = spawn_ask(&g, "a", GATED, run.clone());
        until(|| batches.lock().unwrap().len() == 2).await;
        // With both slots taken the next asks wait, and go together as
        // soon as one batch ends.
        let asks: Vec<_> = (0..5).map(|i| spawn_ask(&g, "a", i, run.clone())).collect();
        until(|| waiting(&g, "a") == 5).await;
        assert_eq!(batches.lock().unwrap().len(), 2, "a third batch ran while two were running");
        gate.add_permits(1);
        for (i, a) in asks.into_iter().enumerate() {
            assert_eq!(a.await.unwrap(), Some(i * 10));
        }
        gate.add_permits(1);
        assert_eq!(first.await.unwrap(), Some(GATED * 10));
        assert_eq!(second.await.unwrap(), Some(GATED * 10));
        let batches = batches.lock().unwrap().clone();
        assert_eq!(batches.len(), 3, "{batches:?}");
        let mut third = batches[2].clone();
        third.sort();
        assert_eq!(third, (0..5).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_hold_at_most_max_batch() {
        let limits = BatchLimits { max_wait: Duration::from_millis(200), max_batch: 4, max_in_flight: 1 };
        let (g, batches, _, run) = recorder(limits, Duration::from_millis(20));
        let asks: Vec<_> = (0..15)
            .map(|i| {
                let (g, run) = (Arc::clone(&g), run.clone());
                tokio::spawn(async move { g.submit("a", i, run).await })
            })
            .collect();
        for (i, a) in asks.into_iter().enumerate() {
            assert_eq!(a.await.unwrap(), Some(i * 10));
        }
        let batches = batches.lock().unwrap().clone();
        assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= 4), "{batches:?}");
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 15);
        assert!(batches.len() >= 4, "15 asks in batches of at most 4: {batches:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_ask_waits_no_longer_than_max_wait() {
        // After a batch of 8 the drainer expects 8 callers back; a lone
        // caller waits for them, but at most max_wait.
        let limits = BatchLimits { max_wait: Duration::from_millis(30), max_batch: 64, max_in_flight: 1 };
        let (g, batches, gate, run) = recorder(limits, Duration::ZERO);
        let first = spawn_ask(&g, "a", GATED, run.clone());
        until(|| batches.lock().unwrap().len() == 1).await;
        let eight: Vec<_> = (0..8).map(|i| spawn_ask(&g, "a", i, run.clone())).collect();
        until(|| waiting(&g, "a") == 8).await;
        gate.add_permits(1);
        first.await.unwrap();
        for a in eight {
            a.await.unwrap();
        }
        assert_eq!(batches.lock().unwrap().last().map(Vec::len), Some(8));
        let t = Instant::now();
        assert_eq!(g.submit("a", 7, run.clone()).await, Some(70));
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(30), "did not wait for the expected callers: {waited:?}");
        // Bounded (the slack is for a loaded machine's scheduling).
        assert!(waited <= Duration::from_millis(30 + 500), "waited {waited:?}");
        // With a zero wait a lone ask goes at once.
        let limits = BatchLimits { max_wait: Duration::ZERO, max_batch: 64, max_in_flight: 1 };
        let (g, _, _, run) = recorder(limits, Duration::ZERO);
        let t = Instant::now();
        assert_eq!(g.submit("b", 3, run).await, Some(30));
        assert!(t.elapsed() < Duration::from_millis(500), "waited {:?}", t.elapsed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_are_batched_apart_and_idle_drainers_retire() {
        let limits = BatchLimits { max_wait: Duration::from_millis(5), max_batch: 64, max_in_flight: 1 };
        let (g, batches, _, run) = recorder(limits, Duration::from_millis(5));
        let asks: Vec<_> = (0..10)
            .map(|i| {
                let (g, run) = (Arc::clone(&g), run.clone());
                let key = if i % 2 == 0 { "even" } else { "odd" };
                tokio::spawn(async move { g.submit(key, i, run).await })
            })
            .collect();
        for (i, a) in asks.into_iter().enumerate() {
            assert_eq!(a.await.unwrap(), Some(i * 10));
        }
        for b in batches.lock().unwrap().iter() {
            assert!(b.iter().all(|x| x % 2 == b[0] % 2), "a batch mixed two keys: {b:?}");
        }
        let t = Instant::now();
        while !g.queues.lock().unwrap().is_empty() {
            assert!(t.elapsed() < LINGER * 20, "idle drainers did not retire");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A retired key starts a new drainer.
        assert_eq!(g.submit("even", 42, run).await, Some(420));
    }

    #[test]
    fn the_config_bounds_batching() {
        let config = crate::config::Config::default();
        let limits = config.search_batching().unwrap();
        assert_eq!((limits.max_wait, limits.max_batch), (Duration::ZERO, 64));
        assert!(limits.max_in_flight >= 4, "four batches per core by default");
        let two = crate::config::Config { search_concurrency: 2, ..Default::default() };
        assert_eq!(two.search_batching().unwrap().max_in_flight, 2);
        let zero = crate::config::Config { search_batch_max: 0, ..Default::default() };
        assert!(zero.search_batching().unwrap_err().message().contains("at least 1"));
        let long = crate::config::Config { search_batch_wait_us: 2_000_000, ..Default::default() };
        assert!(long.search_batching().unwrap_err().message().contains("at most"));
        let two_ms = crate::config::Config { search_batch_wait_us: 2000, ..Default::default() };
        assert_eq!(two_ms.search_batching().unwrap().max_wait, Duration::from_millis(2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_batch_fails_alone_and_the_queue_goes_on() {
        let g: Arc<Gatherer<usize, usize>> =
            Arc::new(Gatherer::new(BatchLimits { max_wait: Duration::ZERO, max_batch: 8, max_in_flight: 1 }));
        let run = |asks: Vec<usize>| async move {
            assert!(!asks.contains(&13), "unlucky");
            asks
        };
        assert_eq!(g.submit("a", 13, run).await, None);
        assert_eq!(g.submit("a", 7, run).await, Some(7));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_runner_short_of_answers_gives_none() {
        let g: Arc<Gatherer<usize, usize>> =
            Arc::new(Gatherer::new(BatchLimits { max_wait: Duration::ZERO, max_batch: 8, max_in_flight: 1 }));
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let run = move |_: Vec<usize>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Vec::new() }
        };
        assert_eq!(g.submit("a", 1, run).await, None);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
