//! [`DistributedDataParallel`]: a module whose parameters' gradients are
//! averaged across the ranks of a [`ProcessGroup`] during backward.
//!
//! As PyTorch's: the parameters are laid out in buckets, last parameter
//! first (the order backward tends to produce their gradients). Each
//! parameter has a post-accumulate hook; when the last parameter of a
//! bucket has its gradient, and every bucket before it has been started,
//! the bucket goes to this replica's communication thread, which
//! all-reduces it while backward goes on. When backward ends, a callback
//! sends what is left, waits for those buckets, averages the last bucket
//! itself (nothing is left to overlap it with, and a hand-off to the
//! thread and back would only add two wake-ups), and writes the averages
//! back into `.grad`.
//! Buckets start in the same order on every rank, so the collectives
//! match.

use super::{CommError, Element, ProcessGroup};
use crate::autograd::hooks::at_backward_end;
use crate::nn::Module;
use crate::sync::lock;
use crate::{is_grad_enabled, no_grad, HookHandle, Tensor};
use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

/// How [`DistributedDataParallel`] buckets gradients (PyTorch's
/// `bucket_cap_mb` and `broadcast_buffers`).
#[derive(Clone, Debug, PartialEq)]
pub struct DdpOptions {
    /// A bucket's size in bytes, at most (a parameter larger than that has
    /// a bucket of its own). Default 25 MiB, as PyTorch's.
    pub bucket_bytes: usize,
    /// The first bucket's, smaller so that communication starts early.
    /// Default 1 MiB, as PyTorch's.
    pub first_bucket_bytes: usize,
    /// Whether each forward (with grad enabled) first copies rank 0's
    /// buffers (e.g. running statistics) to every rank. Default true.
    pub broadcast_buffers: bool,
}

impl Default for DdpOptions {
    fn default() -> Self {
        DdpOptions {
            bucket_bytes: 25 << 20,
            first_bucket_bytes: 1 << 20,
            broadcast_buffers: true,
        }
    }
}

/// What the gradient averaging of a [`DistributedDataParallel`] did so
/// far: how much of its communication backward hid.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DdpStats {
    /// Backwards that averaged gradients.
    pub backwards: u64,
    /// Buckets per backward.
    pub buckets: usize,
    /// Time the communication thread spent in all-reduces, in seconds.
    pub reduce_seconds: f64,
    /// Time the end of backward waited for them, in seconds: the part of
    /// the communication that backward did not hide.
    pub exposed_seconds: f64,
}

impl DdpStats {
    /// The share of the all-reduce time that ran while backward still
    /// computed: `1 - exposed / reduce` (0 when nothing was reduced).
    pub fn overlap(&self) -> f64 {
        if self.reduce_seconds > 0.0 {
            (1.0 - self.exposed_seconds / self.reduce_seconds).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// A module trained data-parallel: each rank holds one over its own
/// replica, and after every backward each parameter's `.grad` is the
/// average over the ranks of what backward put there, the same on every
/// rank, so that an optimizer step keeps the replicas identical.
///
/// [`new`](DistributedDataParallel::new) copies rank 0's parameters and
/// buffers to every rank, after checking that every rank built the same
/// parameters (names, shapes, order) and buckets: a rank whose differ
/// panics, as do the others, naming the first difference, instead of
/// waiting forever. A rank that panics fails the group: the others panic
/// at their next averaging, naming it.
///
/// A parameter that gets no gradient in a backward is averaged with its
/// `.grad` as it is (zeros if it has none). Averaging happens in
/// `backward` (and its forms), which fill `.grad`; [`crate::grad`], which
/// leaves `.grad` alone, averages nothing. Gradients accumulate across
/// backwards as usual: each backward averages the accumulated `.grad`.
/// See the module docs for an example, and `docs/distributed.md`.
pub struct DistributedDataParallel<M, G: ProcessGroup> {
    module: M,
    group: Arc<G>,
    options: DdpOptions,
    reducer: Arc<dyn Averaging>,
    hooks: Vec<HookHandle>,
    comm: Option<JoinHandle<()>>,
}

/// The reducer, whatever its element type.
trait Averaging: Send + Sync {
    fn stats(&self) -> DdpStats;
    /// Turns the averaging off (`true`) or on; returns the previous state.
    fn set_paused(&self, paused: bool) -> bool;
    /// Stops the communication thread (once its queue is done).
    fn shutdown(&self);
}

impl<M, G: ProcessGroup + 'static> DistributedDataParallel<M, G> {
    /// Wraps `module` (this rank's replica) for training over `group`,
    /// with the default [`DdpOptions`]. Every rank must call it, with the
    /// same model.
    ///
    /// **Panics** if the ranks' models differ (the message names the
    /// first difference), or if a rank fails meanwhile.
    #[track_caller]
    pub fn new<T: Element>(module: M, group: G) -> Self
    where
        M: Module<T>,
    {
        Self::with_options(module, group, DdpOptions::default())
    }

    /// As [`new`](DistributedDataParallel::new), with `options`.
    ///
    /// ```
    /// use tapegrad::distributed::{DdpOptions, DistributedDataParallel, ThreadGroup};
    /// use tapegrad::nn::{Linear, Module};
    /// let group = ThreadGroup::new(1).pop().unwrap();
    /// let opts = DdpOptions { bucket_bytes: 64, first_bucket_bytes: 64, ..Default::default() };
    /// let ddp = DistributedDataParallel::with_options(Linear::<f32>::new(8, 2), group, opts);
    /// let x = tapegrad::Tensor::ones(&[3, 8]);
    /// ddp.forward(&x).sum().backward();
    /// // weight: 16 values = 64 bytes, bias 2: two buckets
    /// assert_eq!(ddp.stats().buckets, 2);
    /// ```
    ///
    /// **Panics** as `new`, and if a bucket size is 0.
    #[track_caller]
    pub fn with_options<T: Element>(module: M, group: G, options: DdpOptions) -> Self
    where
        M: Module<T>,
    {
        assert!(
            options.bucket_bytes > 0 && options.first_bucket_bytes > 0,
            "DistributedDataParallel: bucket sizes must be positive (bucket_bytes {}, first_bucket_bytes {})",
            options.bucket_bytes,
            options.first_bucket_bytes
        );
        let group = Arc::new(group);
        let rank = group.rank();
        let named = trained(&module);
        let buckets = bucket_layout(&named, &options);
        check_same_layout(&*group, &describe(&named, &buckets, &options));
        let mut state: Vec<Tensor<T>> = module.parameters();
        state.extend(module.named_buffers().into_iter().map(|(_, b)| b));
        if let Err(e) = broadcast_tensors(&*group, &state) {
            panic!("DistributedDataParallel::new on rank {rank}: copying rank 0's parameters failed: {e}");
        }

        let (jobs, queue) = channel();
        let reducer = Arc::new(Reducer::new(named, buckets, group.clone(), jobs));
        let hooks = reducer
            .params
            .iter()
            .enumerate()
            .map(|(i, (_, p))| {
                let r = reducer.clone();
                p.register_post_accumulate_grad_hook(move |p| r.ready(i, p))
            })
            .collect();
        let comm = {
            let reducer = reducer.clone();
            std::thread::Builder::new()
                .name(format!("ddp-comm-rank{rank}"))
                .spawn(move || communicate(&reducer, queue))
                .expect("DistributedDataParallel: cannot start the communication thread")
        };
        DistributedDataParallel {
            module,
            group,
            options,
            reducer,
            hooks,
            comm: Some(comm),
        }
    }

    /// The module inside (this rank's replica).
    pub fn module(&self) -> &M {
        &self.module
    }

    /// The process group.
    pub fn group(&self) -> &G {
        &self.group
    }

    /// What the averaging did so far.
    pub fn stats(&self) -> DdpStats {
        self.reducer.stats()
    }

    /// Runs `f` with the averaging off (PyTorch's `no_sync`): backwards in
    /// `f` only accumulate this rank's gradients, and the first backward
    /// after it averages the accumulated sums. Gradient accumulation over
    /// several micro-batches then communicates once per optimizer step.
    ///
    /// ```
    /// use tapegrad::distributed::{DistributedDataParallel, ThreadGroup};
    /// use tapegrad::nn::{Linear, Module};
    /// use tapegrad::Tensor;
    /// let ddp = DistributedDataParallel::new(Linear::<f32>::new(4, 1), ThreadGroup::new(1).pop().unwrap());
    /// let x = Tensor::ones(&[2, 4]);
    /// ddp.no_sync(|| ddp.forward(&x).sum().backward()); // accumulated, not averaged
    /// ddp.forward(&x).sum().backward(); // averages both
    /// assert_eq!(ddp.stats().backwards, 1);
    /// ```
    pub fn no_sync<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Resume<'a>(&'a dyn Averaging, bool);
        impl Drop for Resume<'_> {
            fn drop(&mut self) {
                self.0.set_paused(self.1);
            }
        }
        let _resume = Resume(&*self.reducer, self.reducer.set_paused(true));
        f()
    }
}

impl<T: Element, M: Module<T>, G: ProcessGroup + 'static> Module<T> for DistributedDataParallel<M, G> {
    /// The module's forward, after copying rank 0's buffers to this rank
    /// when there are any, grad is enabled and `broadcast_buffers` is on.
    ///
    /// **Panics** if that copy fails (a rank failed).
    #[track_caller]
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        if self.options.broadcast_buffers && is_grad_enabled() {
            let buffers: Vec<Tensor<T>> = self.module.named_buffers().into_iter().map(|(_, b)| b).collect();
            if !buffers.is_empty() {
                if let Err(e) = broadcast_tensors(&*self.group, &buffers) {
                    panic!(
                        "DistributedDataParallel::forward on rank {}: copying rank 0's buffers failed: {e}",
                        self.group.rank()
                    );
                }
            }
        }
        self.module.forward(x)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor<T>)> {
        self.module.named_parameters()
    }

    fn named_buffers(&self) -> Vec<(String, Tensor<T>)> {
        self.module.named_buffers()
    }

    fn set_training(&self, training: bool) {
        self.module.set_training(training);
    }
}

impl<M, G: ProcessGroup> Drop for DistributedDataParallel<M, G> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Before joining: the communication thread may wait for the
            // other ranks, who may wait for this one.
            self.group.fail("it panicked");
        }
        for hook in self.hooks.drain(..) {
            hook.remove();
        }
        self.reducer.shutdown();
        if let Some(comm) = self.comm.take() {
            let _ = comm.join();
        }
    }
}

/// The module's distinct parameters that require grad, with their names.
fn trained<T: Element>(module: &dyn Module<T>) -> Vec<(String, Tensor<T>)> {
    let mut seen = HashSet::new();
    module
        .named_parameters()
        .into_iter()
        .filter(|(_, p)| p.requires_grad() && seen.insert(Arc::as_ptr(&p.inner)))
        .collect()
}

/// The buckets, as ranges of parameter indices counted from the last
/// parameter: filled greedily up to the caps.
fn bucket_layout<T: Element>(named: &[(String, Tensor<T>)], options: &DdpOptions) -> Vec<Range<usize>> {
    let size = std::mem::size_of::<T>();
    let mut buckets = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (_, p)) in named.iter().rev().enumerate() {
        let cap = if buckets.is_empty() {
            options.first_bucket_bytes
        } else {
            options.bucket_bytes
        };
        if i > start && bytes + p.numel() * size > cap {
            buckets.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += p.numel() * size;
    }
    if start < named.len() {
        buckets.push(start..named.len());
    }
    buckets
}

/// One line per fact the ranks must agree on.
fn describe<T: Element>(
    named: &[(String, Tensor<T>)],
    buckets: &[Range<usize>],
    o: &DdpOptions,
) -> Vec<String> {
    let mut lines = vec![format!("{} parameters of {}", named.len(), T::DTYPE)];
    lines.extend(
        named
            .iter()
            .map(|(n, p)| format!("parameter `{n}` of shape {:?}", p.shape())),
    );
    lines.push(format!(
        "buckets of {:?} parameters (bucket_bytes {}, first_bucket_bytes {})",
        buckets.iter().map(|b| b.len()).collect::<Vec<_>>(),
        o.bucket_bytes,
        o.first_bucket_bytes
    ));
    lines.push(format!("broadcast_buffers {}", o.broadcast_buffers));
    lines
}

/// Panics on every rank, naming the first difference, unless every rank
/// described the same model.
#[track_caller]
fn check_same_layout<G: ProcessGroup>(group: &G, mine: &[String]) {
    let rank = group.rank();
    let all = match group.all_gather_bytes(mine.join("\n").as_bytes()) {
        Ok(all) => all,
        Err(e) => {
            panic!("DistributedDataParallel::new on rank {rank}: comparing the ranks' models failed: {e}")
        }
    };
    let text: Vec<String> = all
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    let first: Vec<&str> = text[0].lines().collect();
    for (other, t) in text.iter().enumerate().skip(1) {
        let lines: Vec<&str> = t.lines().collect();
        if lines == first {
            continue;
        }
        let k = (0..)
            .find(|&k| first.get(k) != lines.get(k))
            .expect("they differ");
        let at = |l: &[&str]| l.get(k).map_or("nothing more".to_string(), |s| s.to_string());
        panic!(
            "DistributedDataParallel::new (rank {rank}): rank {other}'s model differs from rank 0's: rank 0 has {}, \
             rank {other} has {}; every rank must build the same model (parameters, shapes, order) with the same \
             DdpOptions",
            at(&first),
            at(&lines)
        );
    }
}

/// Copies rank 0's values of `tensors` to every rank (one broadcast).
fn broadcast_tensors<T: Element, G: ProcessGroup + ?Sized>(
    group: &G,
    tensors: &[Tensor<T>],
) -> Result<(), CommError> {
    let mut flat: Vec<T> = tensors.iter().flat_map(|t| t.to_vec()).collect();
    group.broadcast(T::elements(&mut flat), 0)?;
    if group.rank() != 0 {
        let mut at = 0;
        no_grad(|| {
            for t in tensors {
                let n = t.numel();
                t.copy_(&Tensor::from_vec(flat[at..at + n].to_vec(), t.shape()));
                at += n;
            }
        });
    }
    Ok(())
}

/// The gradients of one backward on their way to be averaged.
struct Reducer<T: Element> {
    /// In bucket order (last parameter of the module first).
    params: Vec<(String, Tensor<T>)>,
    /// For each parameter: its bucket and where it starts there.
    slot: Vec<(usize, usize)>,
    /// Each bucket's parameters (indices into `params`) and length.
    buckets: Vec<(Range<usize>, usize)>,
    group: Arc<dyn ProcessGroup>,
    step: Mutex<Step<T>>,
    done: Condvar,
    jobs: Mutex<Option<Sender<Job<T>>>>,
    stats: Mutex<DdpStats>,
    /// Inside `no_sync`.
    paused: AtomicBool,
}

/// A bucket sent to the communication thread.
struct Job<T> {
    backward: u64,
    bucket: usize,
    data: Vec<T>,
}

/// Where the averaging of the running backward stands.
struct Step<T> {
    /// Counts backwards; the one running, while `running`.
    backward: u64,
    running: bool,
    /// Each bucket's buffer while it fills (`None` once sent).
    filling: Vec<Option<Vec<T>>>,
    /// Per bucket: how many of its parameters have no gradient yet.
    waiting: Vec<usize>,
    /// Per parameter: whether it has its gradient.
    got: Vec<bool>,
    /// The next bucket to send (they go in order).
    next: usize,
    /// Per bucket: the average, once done.
    results: Vec<Option<Result<Vec<T>, CommError>>>,
    reduce_seconds: f64,
}

impl<T: Element> Reducer<T> {
    fn new(
        named: Vec<(String, Tensor<T>)>,
        layout: Vec<Range<usize>>,
        group: Arc<dyn ProcessGroup>,
        jobs: Sender<Job<T>>,
    ) -> Self {
        let params: Vec<(String, Tensor<T>)> = named.into_iter().rev().collect();
        let mut slot = Vec::with_capacity(params.len());
        let mut buckets = Vec::with_capacity(layout.len());
        for (b, range) in layout.into_iter().enumerate() {
            let mut len = 0;
            for (_, p) in &params[range.clone()] {
                slot.push((b, len));
                len += p.numel();
            }
            buckets.push((range, len));
        }
        let n = buckets.len();
        Reducer {
            step: Mutex::new(Step {
                backward: 0,
                running: false,
                filling: vec![None; n],
                waiting: vec![0; n],
                got: vec![false; params.len()],
                next: 0,
                results: (0..n).map(|_| None).collect(),
                reduce_seconds: 0.0,
            }),
            params,
            slot,
            buckets,
            group,
            done: Condvar::new(),
            jobs: Mutex::new(Some(jobs)),
            stats: Mutex::new(DdpStats::default()),
            paused: AtomicBool::new(false),
        }
    }

    /// Parameter `i` has its gradient for this backward (its hook).
    fn ready(self: &Arc<Self>, i: usize, p: &Tensor<T>) {
        if self.paused.load(Ordering::Relaxed) {
            return;
        }
        let mut step = lock(&self.step);
        if !step.running {
            self.begin(&mut step);
            let me = self.clone();
            at_backward_end(Box::new(move || me.finish()));
        }
        self.copy_grad(&mut step, i, p);
        if !step.got[i] {
            step.got[i] = true;
            step.waiting[self.slot[i].0] -= 1;
        }
        self.send_ready(&mut step);
    }

    /// Copies parameter `i`'s `.grad` (`p`'s), if it has one, into its
    /// place in its bucket, which must not have been sent.
    fn copy_grad(&self, step: &mut Step<T>, i: usize, p: &Tensor<T>) {
        let (b, at) = self.slot[i];
        if let Some(g) = p.grad() {
            let buf = step.filling[b]
                .as_mut()
                .expect("a bucket is sent once all its parameters are in");
            g.with_array(|a| {
                for (dst, &src) in buf[at..at + p.numel()].iter_mut().zip(a.iter()) {
                    *dst = src;
                }
            });
        }
    }

    fn begin(&self, step: &mut Step<T>) {
        step.backward += 1;
        step.running = true;
        step.next = 0;
        step.reduce_seconds = 0.0;
        for (b, (range, len)) in self.buckets.iter().enumerate() {
            step.filling[b] = Some(vec![T::zero(); *len]);
            step.waiting[b] = range.len();
            step.results[b] = None;
        }
        step.got.iter_mut().for_each(|g| *g = false);
    }

    /// Sends the buckets that are full, in order.
    /// The last bucket is not sent: the end of backward averages it
    /// itself, after the others (see `finish`).
    fn send_ready(&self, step: &mut Step<T>) {
        while step.next + 1 < self.buckets.len() && step.waiting[step.next] == 0 {
            self.send(step);
        }
    }

    fn send(&self, step: &mut Step<T>) {
        let bucket = step.next;
        let data = step.filling[bucket].take().expect("sent once");
        step.next += 1;
        let job = Job {
            backward: step.backward,
            bucket,
            data,
        };
        match lock(&self.jobs).as_ref() {
            Some(jobs) if jobs.send(job).is_ok() => {}
            _ => {
                step.results[bucket] = Some(Err(CommError::Transport(
                    "the communication thread has stopped".into(),
                )))
            }
        }
    }

    /// The average of `data` over the ranks, and the seconds it took.
    fn average(&self, mut data: Vec<T>) -> (Result<Vec<T>, CommError>, f64) {
        let start = Instant::now();
        let scale = T::one() / T::of(self.group.world_size() as f64);
        let result = self.group.all_reduce_sum(T::elements(&mut data)).map(|()| {
            data.iter_mut().for_each(|x| *x = *x * scale);
            data
        });
        (result, start.elapsed().as_secs_f64())
    }

    /// When backward ends: sends the buckets not sent yet (their missing
    /// gradients as they are), waits for every average and writes it into
    /// `.grad`.
    fn finish(&self) {
        let mut step = lock(&self.step);
        step.running = false;
        if std::thread::panicking() {
            // This backward panicked: the other ranks would wait for
            // buckets this one will not send. Results of this backward
            // that arrive later are ignored (they carry its number).
            self.group.fail("a backward panicked there");
            return;
        }
        for (i, (_, p)) in self.params.iter().enumerate() {
            if !step.got[i] {
                self.copy_grad(&mut step, i, p);
            }
        }
        let last = self.buckets.len() - 1;
        while step.next < last {
            self.send(&mut step);
        }
        let start = Instant::now();
        while step.results[..last].iter().any(Option::is_none) {
            step = wait(&self.done, step);
        }
        // The last bucket, here: no thread has to wake up to start it and
        // then wake this one, and nothing is left to overlap it with. It
        // goes after the others, so the ranks' collectives stay in order.
        let data = step.filling[last].take().expect("the last bucket is not sent");
        step.next = last + 1;
        let (result, seconds) = self.average(data);
        step.results[last] = Some(result);
        step.reduce_seconds += seconds;
        let exposed = start.elapsed().as_secs_f64();
        for (b, result) in step.results.iter_mut().enumerate() {
            let avg = match result.take().expect("waited for") {
                Ok(avg) => avg,
                Err(e) => panic!(
                    "DistributedDataParallel: averaging gradients (bucket {b} of backward {}) failed: {e}",
                    step.backward
                ),
            };
            let (range, _) = &self.buckets[b];
            let mut at = 0;
            for (_, p) in &self.params[range.clone()] {
                let n = p.numel();
                *p.grad_slot() = Some(Tensor::from_vec(avg[at..at + n].to_vec(), p.shape()));
                at += n;
            }
        }
        let mut stats = lock(&self.stats);
        stats.backwards += 1;
        stats.buckets = self.buckets.len();
        stats.reduce_seconds += step.reduce_seconds;
        stats.exposed_seconds += exposed;
    }
}

fn wait<'a, U>(cv: &Condvar, guard: MutexGuard<'a, U>) -> MutexGuard<'a, U> {
    cv.wait(guard).unwrap_or_else(|e| e.into_inner())
}

impl<T: Element> Averaging for Reducer<T> {
    fn stats(&self) -> DdpStats {
        lock(&self.stats).clone()
    }

    fn set_paused(&self, paused: bool) -> bool {
        self.paused.swap(paused, Ordering::Relaxed)
    }

    fn shutdown(&self) {
        lock(&self.jobs).take();
    }
}

/// The communication thread: all-reduces the buckets it is sent, in
/// order, and hands back their averages.
fn communicate<T: Element>(reducer: &Reducer<T>, queue: Receiver<Job<T>>) {
    for job in queue {
        let (result, seconds) = reducer.average(job.data);
        let mut step = lock(&reducer.step);
        if step.backward == job.backward {
            step.results[job.bucket] = Some(result);
            step.reduce_seconds += seconds;
            reducer.done.notify_all();
        }
    }
}
