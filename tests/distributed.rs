//! Data-parallel training over threads: equal to one process on the whole
//! batch, buckets averaged while backward runs, and failures that name a
//! rank instead of hanging.

mod common;
#[path = "common/ddp_case.rs"]
mod ddp_case;

use common::panic_message;
use ddp_case::{max_diff, one_rank, single_process, Opt};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tapegrad::distributed::{
    CommError, DdpOptions, DistributedDataParallel, Elements, ProcessGroup, ThreadGroup,
};
use tapegrad::nn::{Linear, Module, Sequential, Tanh};
use tapegrad::prelude::*;

/// A safety net: a bug that would hang fails with a timeout instead.
const PATIENCE: Duration = Duration::from_secs(120);

/// Runs `body` on every rank of a `n`-thread group; each rank's result.
fn on_threads<R: Send + 'static>(
    n: usize,
    body: impl Fn(ThreadGroup) -> R + Send + Sync + 'static,
) -> Vec<std::thread::Result<R>> {
    let body = Arc::new(body);
    let workers: Vec<_> = ThreadGroup::with_timeout(n, PATIENCE)
        .into_iter()
        .map(|g| {
            let body = body.clone();
            std::thread::spawn(move || body(g))
        })
        .collect();
    workers.into_iter().map(|w| w.join()).collect()
}

fn message(r: &std::thread::Result<impl Sized>) -> String {
    match r {
        Ok(_) => "returned normally".to_string(),
        Err(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
    }
}

#[test]
fn two_and_four_ranks_end_where_one_process_on_the_whole_batch_does() {
    for opt in [Opt::SgdMomentum, Opt::Adam] {
        let expected = single_process(opt);
        for n in [2, 4] {
            let ranks = on_threads(n, move |g| one_rank(g, opt));
            for (rank, r) in ranks.into_iter().enumerate() {
                let got = r.unwrap_or_else(|e| panic!("rank {rank} of {n} panicked: {e:?}"));
                let d = max_diff(&got, &expected);
                assert!(
                    d < 1e-10,
                    "{opt:?}, {n} ranks: rank {rank} differs from one process by {d:e}"
                );
            }
        }
    }
}

#[test]
fn without_averaging_the_ranks_would_differ() {
    // The control for the test above: the shards' gradients differ, so
    // the replicas agree only because DDP averages them.
    let (x, y) = ddp_case::batch();
    let grads: Vec<Vec<f64>> = (0..2)
        .map(|rank| {
            let m = ddp_case::model();
            ddp_case::set_fixed(&m);
            m.forward(&x.narrow(0, rank * 12, 12))
                .mse_loss(&y.narrow(0, rank * 12, 12))
                .backward();
            m.parameters()[0].grad().unwrap().to_vec()
        })
        .collect();
    assert!(max_diff(&grads[..1], &grads[1..]) > 1e-3);
}

/// A checkpointed block: the parameters are captured by the closure.
struct Checkpointed(Arc<Sequential<f64>>);

impl Module<f64> for Checkpointed {
    fn forward(&self, x: &Tensor<f64>) -> Tensor<f64> {
        let inner = self.0.clone();
        checkpoint(move |xs: &[Tensor<f64>]| inner.forward(&xs[0]), &[x.clone()])
    }
    fn named_parameters(&self) -> Vec<(String, Tensor<f64>)> {
        self.0.named_parameters()
    }
}

#[test]
fn a_checkpointed_model_averages_the_same_gradients() {
    let expected = single_process(Opt::Adam);
    let ranks = on_threads(2, |g| {
        let rank = g.rank();
        let ddp = DistributedDataParallel::new(Checkpointed(Arc::new(ddp_case::replica(rank))), g);
        let (x, y) = ddp_case::batch();
        let (x, y) = (x.narrow(0, rank * 12, 12), y.narrow(0, rank * 12, 12));
        let mut opt = ddp_case::optimizer(ddp.parameters(), Opt::Adam);
        for _ in 0..ddp_case::STEPS {
            opt.zero_grad();
            ddp.forward(&x).mse_loss(&y).backward();
            opt.step();
        }
        ddp.parameters().iter().map(|p| p.to_vec()).collect::<Vec<_>>()
    });
    for r in ranks {
        let d = max_diff(&r.unwrap(), &expected);
        assert!(d < 1e-10, "checkpointed: {d:e}");
    }
}

#[test]
fn gradients_accumulated_over_two_backwards_are_averaged_as_one_batch() {
    // Two half-shards per rank, one optimizer step: as one process on the
    // whole batch with the loss summed over its two halves.
    let expected = ddp_case::accumulated_over_halves();
    let ranks = on_threads(2, move |g| {
        let rank = g.rank();
        let ddp = DistributedDataParallel::new(ddp_case::replica(rank), g);
        let (x, y) = ddp_case::batch();
        for half in 0..2 {
            let rows = |t: &Tensor<f64>| t.narrow(0, half * 12 + rank * 6, 6);
            ddp.forward(&rows(&x)).mse_loss(&rows(&y)).backward();
        }
        ddp_case::grads(&ddp)
    });
    for r in ranks {
        let d = max_diff(&r.unwrap(), &expected);
        assert!(d < 1e-12, "accumulated: {d:e}");
    }
}

#[test]
fn construction_copies_rank_0s_parameters_to_every_rank() {
    let ranks = on_threads(3, |g| {
        let ddp = DistributedDataParallel::new(ddp_case::model(), g); // each rank's own random init
        ddp.parameters().iter().map(|p| p.to_vec()).collect::<Vec<_>>()
    });
    let ranks: Vec<_> = ranks.into_iter().map(Result::unwrap).collect();
    assert_eq!(ranks[1], ranks[0]);
    assert_eq!(ranks[2], ranks[0]);
}

/// A group that logs when each all-reduce starts, so that a test can
/// see whether it started during backward.
struct Logged {
    inner: ThreadGroup,
    started: Arc<(Mutex<usize>, Condvar)>,
}

impl ProcessGroup for Logged {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world_size(&self) -> usize {
        self.inner.world_size()
    }
    fn all_reduce_sum(&self, buf: Elements<'_>) -> Result<(), CommError> {
        let (n, cv) = &*self.started;
        *n.lock().unwrap() += 1;
        cv.notify_all();
        self.inner.all_reduce_sum(buf)
    }
    fn broadcast(&self, buf: Elements<'_>, root: usize) -> Result<(), CommError> {
        self.inner.broadcast(buf, root)
    }
    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, CommError> {
        self.inner.all_gather_bytes(bytes)
    }
    fn fail(&self, reason: &str) {
        self.inner.fail(reason)
    }
}

#[test]
fn the_last_layers_bucket_is_reduced_while_backward_still_runs() {
    // Buckets of one parameter each. A hook on the first layer's output runs
    // late in backward (before the first layer's rule): by then the last
    // layer's bucket must have been all-reduced, without waiting for the end.
    let started = Arc::new((Mutex::new(0), Condvar::new()));
    let group = Logged {
        inner: ThreadGroup::new(1).pop().unwrap(),
        started: started.clone(),
    };
    let m = Sequential::<f64>::new()
        .add(Linear::new(3, 4))
        .add(Tanh)
        .add(Linear::new(4, 1));
    let first = m.parameters()[0].clone();
    let tiny = DdpOptions {
        bucket_bytes: 8,
        first_bucket_bytes: 8,
        ..Default::default()
    };
    let ddp = DistributedDataParallel::with_options(m, group, tiny);
    let x = Tensor::<f64>::ones(&[2, 3]);
    let h = x.matmul(&first.t()); // the first layer's product, by hand
    let seen_during_backward = Arc::new(Mutex::new(None));
    let seen = seen_during_backward.clone();
    let _hook = h.register_hook(move |_| {
        let (n, cv) = &*started;
        let (count, _) = cv
            .wait_timeout_while(n.lock().unwrap(), Duration::from_secs(30), |n| *n == 0)
            .unwrap();
        *seen.lock().unwrap() = Some(*count);
        None
    });
    let rest = Sequential::<f64>::new().add(Tanh);
    let out = ddp.module().forward(&x); // the parameters' real use
    (out.sum() + rest.forward(&h).sum()).backward();
    let during = seen_during_backward.lock().unwrap().expect("the hook ran");
    assert!(
        during >= 1,
        "no all-reduce had started when the first layer's gradient was computed"
    );
    let stats = ddp.stats();
    assert_eq!((stats.backwards, stats.buckets), (1, 4));
}

#[test]
fn ranks_with_different_models_all_panic_naming_the_difference() {
    let ranks = on_threads(2, |g| {
        let m = if g.rank() == 1 {
            Sequential::<f64>::new().add(Linear::new(4, 7))
        } else {
            Sequential::<f64>::new().add(Linear::new(4, 8))
        };
        let _ddp = DistributedDataParallel::new(m, g);
    });
    for r in &ranks {
        let msg = message(r);
        assert!(
            msg.contains("rank 1's model differs from rank 0's")
                && msg.contains("`0.weight` of shape [8, 4]")
                && msg.contains("`0.weight` of shape [7, 4]"),
            "{msg}"
        );
    }
}

#[test]
fn a_rank_that_panics_makes_the_others_fail_naming_it() {
    let ranks = on_threads(3, |g| {
        let rank = g.rank();
        let ddp = DistributedDataParallel::new(ddp_case::model(), g);
        let (x, y) = ddp_case::batch();
        for step in 0..3 {
            if rank == 2 && step == 1 {
                panic!("rank 2 gives up");
            }
            ddp.forward(&x).mse_loss(&y).backward();
        }
    });
    assert!(message(&ranks[2]).contains("rank 2 gives up"));
    for r in &ranks[..2] {
        let msg = message(r);
        assert!(
            msg.contains("averaging gradients") && msg.contains("rank 2 failed: it panicked"),
            "{msg}"
        );
    }
}

#[test]
fn a_rank_that_leaves_early_makes_the_others_fail_not_wait() {
    let ranks = on_threads(2, |g| {
        let rank = g.rank();
        let ddp = DistributedDataParallel::new(ddp_case::model(), g);
        let (x, y) = ddp_case::batch();
        let steps = if rank == 0 { 3 } else { 1 };
        for _ in 0..steps {
            ddp.forward(&x).mse_loss(&y).backward();
        }
    });
    assert!(ranks[1].is_ok());
    let msg = message(&ranks[0]);
    assert!(msg.contains("rank 1 left the group"), "{msg}");
}

#[test]
fn collectives_that_do_not_match_fail_on_every_rank() {
    let ranks = on_threads(2, |g| {
        let mut buf = vec![1.0f32; 2 + g.rank()];
        g.all_reduce_sum(Elements::F32(&mut buf))
    });
    for r in ranks {
        let err = r.unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            "the ranks called different collectives: rank 0: all_reduce_sum of 2 f32; rank 1: all_reduce_sum of 3 f32"
        );
    }
}

#[test]
fn a_thread_group_broadcasts_and_gathers() {
    let ranks = on_threads(3, |g| {
        let mut buf = vec![g.rank() as f64; 2];
        g.broadcast(Elements::F64(&mut buf), 2).unwrap();
        let all = g.all_gather_bytes(&[g.rank() as u8; 2][..g.rank()]).unwrap();
        (buf, all)
    });
    for r in ranks {
        let (buf, all) = r.unwrap();
        assert_eq!(buf, [2.0, 2.0]);
        assert_eq!(all, [vec![], vec![1u8], vec![2u8, 2]]);
    }
}

#[test]
fn a_zero_sized_group_is_refused() {
    let msg = panic_message(|| {
        ThreadGroup::new(0);
    });
    assert!(msg.contains("at least one rank"), "{msg}");
}

#[test]
fn no_sync_accumulates_locally_and_the_next_backward_averages_the_sums() {
    // Same as accumulating over two backwards, communicating once.
    let expected = ddp_case::accumulated_over_halves();
    let ranks = on_threads(2, move |g| {
        let rank = g.rank();
        let ddp = DistributedDataParallel::new(ddp_case::replica(rank), g);
        let (x, y) = ddp_case::batch();
        let rows = |half: usize, t: &Tensor<f64>| t.narrow(0, half * 12 + rank * 6, 6);
        ddp.no_sync(|| ddp.forward(&rows(0, &x)).mse_loss(&rows(0, &y)).backward());
        let local = ddp.parameters()[0].grad().unwrap().to_vec();
        ddp.forward(&rows(1, &x)).mse_loss(&rows(1, &y)).backward();
        (local, ddp_case::grads(&ddp), ddp.stats().backwards)
    });
    let ranks: Vec<_> = ranks.into_iter().map(Result::unwrap).collect();
    assert_ne!(
        ranks[0].0, ranks[1].0,
        "inside no_sync each rank keeps its own gradient"
    );
    for (_, grads, backwards) in ranks {
        assert_eq!(backwards, 1);
        let d = max_diff(&grads, &expected);
        assert!(d < 1e-12, "no_sync: {d:e}");
    }
}
