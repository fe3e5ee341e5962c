//! [`ThreadGroup`]: workers that are threads of one process, with
//! collectives over shared memory.
//!
//! Every collective is one exchange: each rank leaves a copy of its
//! buffer, the last to arrive publishes all of them, and each rank then
//! reduces them itself in rank order, so that every rank gets bitwise the
//! same sum.

use super::{CommError, Elements, ProcessGroup};
use crate::sync::lock;
use std::ops::AddAssign;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One member of a group of worker threads (one per rank), made by
/// [`ThreadGroup::new`]; move each into its worker thread.
///
/// A member dropped while its thread panics fails the group: the other
/// ranks' collectives end with [`CommError::PeerFailed`] naming its rank
/// instead of waiting for it; a member dropped otherwise leaves, and a
/// collective that still waits for it ends with [`CommError::PeerLeft`].
///
/// ```
/// use tapegrad::distributed::{Elements, ProcessGroup, ThreadGroup};
/// let workers: Vec<_> = ThreadGroup::new(3)
///     .into_iter()
///     .map(|g| {
///         std::thread::spawn(move || {
///             let mut buf = vec![g.rank() as f32, 1.0];
///             g.all_reduce_sum(Elements::F32(&mut buf)).unwrap();
///             buf
///         })
///     })
///     .collect(); // every rank started before any is joined
/// let sums: Vec<Vec<f32>> = workers.into_iter().map(|t| t.join().unwrap()).collect();
/// assert_eq!(sums, vec![vec![3.0, 3.0]; 3]); // 0 + 1 + 2, 1 + 1 + 1
/// ```
#[derive(Debug)]
pub struct ThreadGroup {
    rank: usize,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    size: usize,
    timeout: Option<Duration>,
    round: Mutex<Round>,
    changed: Condvar,
    /// `round.generation`, readable without the lock.
    completed: AtomicU64,
}

/// How long a rank that arrived first polls for the others before it
/// sleeps: the ranks of a training step arrive within a fraction of a
/// millisecond of each other, and a sleeping thread takes tens of
/// microseconds more to be woken (and its core may have been given away).
/// It yields while it polls, so a thread waiting for its core gets it.
const POLL: Duration = Duration::from_micros(200);

/// The exchange in progress.
#[derive(Debug)]
struct Round {
    /// Counts completed exchanges.
    generation: u64,
    /// What each rank has left in this exchange.
    slots: Vec<Option<Contribution>>,
    arrived: usize,
    /// Every rank's contribution to the last completed exchange.
    result: Arc<Vec<Contribution>>,
    failed: Option<(usize, String)>,
    left: Vec<bool>,
}

/// A rank's part of an exchange: what it called, and its data.
#[derive(Debug)]
struct Contribution {
    call: String,
    data: Payload,
}

#[derive(Debug)]
enum Payload {
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<u8>),
    Nothing,
}

impl ThreadGroup {
    /// A group of `world_size` ranks, one member each (rank `i` at index
    /// `i`), whose collectives wait for each other as long as it takes.
    ///
    /// **Panics** if `world_size` is 0.
    pub fn new(world_size: usize) -> Vec<ThreadGroup> {
        Self::make(world_size, None)
    }

    /// As [`new`](ThreadGroup::new), but a collective that has waited
    /// `timeout` for the other ranks ends with [`CommError::Timeout`]
    /// (PyTorch's process groups time out after 30 minutes).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tapegrad::distributed::{CommError, Elements, ProcessGroup, ThreadGroup};
    /// let mut group = ThreadGroup::with_timeout(2, Duration::from_millis(50));
    /// let _idle = group.pop(); // rank 1 never calls
    /// let mut buf = [1.0f64];
    /// let err = group[0].all_reduce_sum(Elements::F64(&mut buf)).unwrap_err();
    /// assert!(matches!(err, CommError::Timeout { ref missing, .. } if missing == &[1]));
    /// ```
    ///
    /// **Panics** if `world_size` is 0.
    pub fn with_timeout(world_size: usize, timeout: Duration) -> Vec<ThreadGroup> {
        Self::make(world_size, Some(timeout))
    }

    fn make(size: usize, timeout: Option<Duration>) -> Vec<ThreadGroup> {
        assert!(
            size > 0,
            "ThreadGroup::new: a group needs at least one rank (world_size 0)"
        );
        let shared = Arc::new(Shared {
            size,
            timeout,
            round: Mutex::new(Round {
                generation: 0,
                slots: (0..size).map(|_| None).collect(),
                arrived: 0,
                result: Arc::new(Vec::new()),
                failed: None,
                left: vec![false; size],
            }),
            changed: Condvar::new(),
            completed: AtomicU64::new(0),
        });
        (0..size)
            .map(|rank| ThreadGroup {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Leaves `contribution`, waits for every rank's, and returns them all
    /// in rank order, after checking that every rank made the same call.
    fn exchange(&self, call: String, data: Payload) -> Result<Arc<Vec<Contribution>>, CommError> {
        let shared = &*self.shared;
        let mut round = lock(&shared.round);
        round.check()?;
        let generation = round.generation;
        round.slots[self.rank] = Some(Contribution { call, data });
        round.arrived += 1;
        if round.arrived == shared.size {
            let all: Vec<Contribution> = round
                .slots
                .iter_mut()
                .map(|s| s.take().expect("arrived"))
                .collect();
            round.result = Arc::new(all);
            round.arrived = 0;
            round.generation += 1;
            shared.completed.store(round.generation, Ordering::Release);
            shared.changed.notify_all();
        } else {
            drop(round);
            let polled = Instant::now();
            while shared.completed.load(Ordering::Acquire) == generation && polled.elapsed() < POLL {
                std::thread::yield_now();
            }
            round = lock(&shared.round);
            let deadline = shared.timeout.map(|t| Instant::now() + t);
            while round.generation == generation {
                if let Err(e) = round.check() {
                    round.withdraw(self.rank);
                    return Err(e);
                }
                round = match deadline {
                    None => wait(&shared.changed, round),
                    Some(deadline) => {
                        let now = Instant::now();
                        if now >= deadline {
                            let missing = (0..shared.size).filter(|&r| round.slots[r].is_none()).collect();
                            round.withdraw(self.rank);
                            let seconds = shared.timeout.expect("a deadline").as_secs_f64();
                            return Err(CommError::Timeout { missing, seconds });
                        }
                        wait_timeout(&shared.changed, round, deadline - now)
                    }
                };
            }
        }
        let all = round.result.clone();
        drop(round);
        if all.iter().any(|c| c.call != all[0].call) {
            return Err(CommError::Mismatch {
                calls: all.iter().map(|c| c.call.clone()).collect(),
            });
        }
        Ok(all)
    }
}

/// Waits on `cv`, recovering the guard if another thread panicked holding
/// the lock (the round is left consistent at every unlock).
fn wait<'a>(cv: &Condvar, guard: MutexGuard<'a, Round>) -> MutexGuard<'a, Round> {
    cv.wait(guard).unwrap_or_else(|e| e.into_inner())
}

fn wait_timeout<'a>(cv: &Condvar, guard: MutexGuard<'a, Round>, d: Duration) -> MutexGuard<'a, Round> {
    cv.wait_timeout(guard, d)
        .map(|(g, _)| g)
        .unwrap_or_else(|e| e.into_inner().0)
}

impl Round {
    /// Whether the exchange can still complete: no rank failed, and none
    /// that has not contributed has left.
    fn check(&self) -> Result<(), CommError> {
        if let Some((rank, reason)) = &self.failed {
            return Err(CommError::PeerFailed {
                rank: *rank,
                reason: reason.clone(),
            });
        }
        match (0..self.left.len()).find(|&r| self.left[r] && self.slots[r].is_none()) {
            Some(rank) => Err(CommError::PeerLeft { rank }),
            None => Ok(()),
        }
    }

    /// Takes back what `rank` left in an exchange that will not complete.
    fn withdraw(&mut self, rank: usize) {
        if self.slots[rank].take().is_some() {
            self.arrived -= 1;
        }
    }
}

/// `buf` = the sum of `parts` in order (the same on every rank).
fn sum_into<'a, E: Copy + AddAssign + 'a>(buf: &mut [E], mut parts: impl Iterator<Item = Option<&'a [E]>>) {
    let first = parts
        .next()
        .flatten()
        .expect("checked: every rank sent this type");
    buf.copy_from_slice(first);
    for part in parts {
        for (b, &x) in buf
            .iter_mut()
            .zip(part.expect("checked: every rank sent this type"))
        {
            *b += x;
        }
    }
}

impl Payload {
    fn of(buf: &Elements<'_>) -> Payload {
        match buf {
            Elements::F32(b) => Payload::F32(b.to_vec()),
            Elements::F64(b) => Payload::F64(b.to_vec()),
        }
    }

    fn f32(&self) -> Option<&[f32]> {
        match self {
            Payload::F32(v) => Some(v),
            _ => None,
        }
    }

    fn f64(&self) -> Option<&[f64]> {
        match self {
            Payload::F64(v) => Some(v),
            _ => None,
        }
    }
}

impl ProcessGroup for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.size
    }

    fn all_reduce_sum(&self, buf: Elements<'_>) -> Result<(), CommError> {
        let call = format!("all_reduce_sum of {} {}", buf.len(), buf.dtype());
        let all = self.exchange(call, Payload::of(&buf))?;
        match buf {
            Elements::F32(b) => sum_into(b, all.iter().map(|c| c.data.f32())),
            Elements::F64(b) => sum_into(b, all.iter().map(|c| c.data.f64())),
        }
        Ok(())
    }

    fn broadcast(&self, buf: Elements<'_>, root: usize) -> Result<(), CommError> {
        assert!(
            root < self.shared.size,
            "broadcast: root rank {root} is not in a group of {}",
            self.shared.size
        );
        let call = format!("broadcast of {} {} from rank {root}", buf.len(), buf.dtype());
        let data = if self.rank == root {
            Payload::of(&buf)
        } else {
            Payload::Nothing
        };
        let all = self.exchange(call, data)?;
        let from = &all[root].data;
        match buf {
            Elements::F32(b) => b.copy_from_slice(from.f32().expect("checked: the same call")),
            Elements::F64(b) => b.copy_from_slice(from.f64().expect("checked: the same call")),
        }
        Ok(())
    }

    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, CommError> {
        let all = self.exchange("all_gather_bytes".to_string(), Payload::Bytes(bytes.to_vec()))?;
        Ok(all
            .iter()
            .map(|c| match &c.data {
                Payload::Bytes(b) => b.clone(),
                _ => unreachable!("checked: the same call"),
            })
            .collect())
    }

    fn fail(&self, reason: &str) {
        let mut round = lock(&self.shared.round);
        round
            .failed
            .get_or_insert_with(|| (self.rank, reason.to_string()));
        self.shared.changed.notify_all();
    }
}

impl Drop for ThreadGroup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.fail("its thread panicked");
        } else {
            let mut round = lock(&self.shared.round);
            round.left[self.rank] = true;
            self.shared.changed.notify_all();
        }
    }
}
