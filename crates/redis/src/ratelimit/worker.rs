//! The background writer of settles, refunds and releases.
//!
//! They run inside completion callbacks and `Drop`, so they cannot wait for Redis: the store
//! queues them here and one task per store sends them, in order, as pipelines of script calls
//! (one round trip per batch). Order matters — a reservation is settled before it is released —
//! and one FIFO queue on one connection keeps it. A batch that fails (Redis down, too slow) is
//! kept and sent again once Redis answers: every operation is idempotent by reservation id, so a
//! batch that was applied but whose reply was lost changes nothing the second time. Operations
//! older than the lease are dropped (their records have expired), as are the oldest ones beyond
//! the queue's capacity; both are counted in `rampart_redis_ratelimit_ops_dropped_total{reason}`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use redis::{ErrorKind, RedisResult, Script, ServerErrorKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::RedisState;

/// Most operations sent in one pipeline.
const BATCH: usize = 128;

/// What to do to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// Settle the token reservation from `reserved` to `actual`.
    Settle,
    /// Refund the request unit.
    Refund,
    /// The admission is over.
    Release,
    /// Undo an admission whose reply was lost.
    Cancel,
}

impl OpKind {
    fn code(self) -> &'static str {
        match self {
            Self::Settle => "s",
            Self::Refund => "r",
            Self::Release => "x",
            Self::Cancel => "c",
        }
    }
}

/// One queued operation.
#[derive(Debug)]
pub(crate) struct Op {
    pub(crate) kind: OpKind,
    pub(crate) keys: [String; 3],
    pub(crate) id: String,
    pub(crate) rpm: u64,
    pub(crate) tpm: u64,
    pub(crate) reserved: u64,
    pub(crate) actual: u64,
    pub(crate) at: Instant,
}

pub(crate) enum Msg {
    Op(Op),
    /// Answered once every message before it has been sent or dropped.
    Flush(oneshot::Sender<()>),
}

/// The sending side, held by the store.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    tx: mpsc::UnboundedSender<Msg>,
}

impl Queue {
    /// Starts the writer task on the current Tokio runtime (`None` outside one).
    pub(crate) fn start(
        state: RedisState,
        script: Arc<Script>,
        lease: Duration,
        capacity: usize,
    ) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (tx, rx) = mpsc::unbounded_channel();
        runtime.spawn(run(state, script, rx, lease, capacity.max(1)));
        Some(Self { tx })
    }

    pub(crate) fn push(&self, op: Op) {
        if self.tx.send(Msg::Op(op)).is_err() {
            dropped("closed", 1);
        }
    }

    /// Resolves once every operation queued before this call has been sent or dropped.
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

fn dropped(reason: &'static str, n: usize) {
    metrics::counter!("rampart_redis_ratelimit_ops_dropped_total", "reason" => reason)
        .increment(n as u64);
}

async fn run(
    state: RedisState,
    script: Arc<Script>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    lease: Duration,
    capacity: usize,
) {
    let mut queue: VecDeque<Msg> = VecDeque::new();
    let mut open = true;
    let mut backoff = Duration::from_millis(25);
    loop {
        if queue.is_empty() {
            if !open {
                return;
            }
            match rx.recv().await {
                Some(m) => queue.push_back(m),
                None => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(m) => queue.push_back(m),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        trim(&mut queue, lease, capacity);
        // Flushes at the front are done.
        while let Some(Msg::Flush(_)) = queue.front() {
            if let Some(Msg::Flush(tx)) = queue.pop_front() {
                let _ = tx.send(());
            }
        }
        let batch: Vec<&Op> = queue
            .iter()
            .take(BATCH)
            .map_while(|m| match m {
                Msg::Op(op) => Some(op),
                Msg::Flush(_) => None,
            })
            .collect();
        if batch.is_empty() {
            continue;
        }
        let n = batch.len();
        match send(&state, &script, &batch).await {
            Ok(()) => {
                queue.drain(..n);
                backoff = Duration::from_millis(25);
            }
            Err(()) if !open => {
                // The store is gone and Redis does not answer: give up.
                dropped("shutdown", queue.len());
                for m in queue.drain(..) {
                    if let Msg::Flush(tx) = m {
                        let _ = tx.send(());
                    }
                }
                return;
            }
            Err(()) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Drops operations older than the lease and the oldest beyond `capacity`.
fn trim(queue: &mut VecDeque<Msg>, lease: Duration, capacity: usize) {
    let now = Instant::now();
    let before = queue.len();
    queue.retain(|m| match m {
        Msg::Op(op) => now.saturating_duration_since(op.at) < lease,
        Msg::Flush(_) => true,
    });
    if queue.len() < before {
        dropped("expired", before - queue.len());
    }
    let mut over = queue.len().saturating_sub(capacity);
    if over > 0 {
        dropped("overflow", over);
        queue.retain(|m| {
            if over > 0 && matches!(m, Msg::Op(_)) {
                over -= 1;
                false
            } else {
                true
            }
        });
    }
}

fn command(script: &Script, op: &Op) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash())
        .arg(3)
        .arg(&op.keys[..])
        .arg(op.kind.code())
        .arg(&op.id)
        .arg(op.rpm)
        .arg(op.tpm)
        .arg(op.reserved)
        .arg(op.actual);
    cmd
}

/// Sends one batch as a pipeline; loads the script first when Redis lost it (a restart).
async fn send(state: &RedisState, script: &Script, batch: &[&Op]) -> Result<(), ()> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for op in batch {
        pipe.add_command(command(script, op));
    }
    let failed = state
        .call(|mut conn| async move {
            let mut results: Vec<RedisResult<Value>> = pipe.query_async(&mut conn).await?;
            let no_script = |r: &RedisResult<Value>| {
                matches!(r, Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript))
            };
            if results.iter().any(no_script) {
                script.load_async(&mut conn).await?;
                results = pipe.query_async(&mut conn).await?;
            }
            Ok(results.iter().filter(|r| r.is_err()).count())
        })
        .await
        .map_err(|_| ())?;
    if failed > 0 {
        // A script error for one operation (not a connection problem): retrying cannot help.
        dropped("error", failed);
        tracing::warn!(
            failed,
            "redis rate-limit store: operations failed in Redis and were dropped"
        );
    }
    Ok(())
}
