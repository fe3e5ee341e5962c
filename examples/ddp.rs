//! The digits CNN (`examples/common/digits_cnn.rs`) trained data-parallel:
//! each rank holds a replica and trains on its share of every batch of 64,
//! and `DistributedDataParallel` averages the gradients during backward.
//! The run is checked against one process trained on the whole batches:
//! the replicas stay identical, and the held-out accuracy is the same.
//!
//! Run (threads of this process, one replica each):
//!     cargo run --release --example ddp                  # 2 replicas
//!     cargo run --release --example ddp -- --ranks 4
//! Over MPI (one process per rank; several machines with a hostfile, see
//! docs/distributed.md):
//!     cargo build --release --features mpi --example ddp
//!     mpirun -np 2 target/release/examples/ddp --mpi
//! `--fail-rank R` makes rank R panic in the third step, to show what the
//! others do (over threads they fail naming it; mpirun ends the job).
//! (`TAPEGRAD_EXAMPLE_SHORT=1` trains one epoch only, for CI.)

mod common;

use common::digits_cnn::digits_cnn;
use common::{accuracy, load_digits, short_mode, subset};
use std::error::Error;
use std::time::Instant;
use tapegrad::data::Batches;
use tapegrad::distributed::{DdpOptions, DistributedDataParallel, ProcessGroup, ThreadGroup};
use tapegrad::nn::Module;
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::Tensor;

const BATCH: usize = 64;

/// What the command line asked.
struct Args {
    ranks: usize,
    mpi: bool,
    fail_rank: Option<usize>,
}

fn args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        ranks: 2,
        mpi: false,
        fail_rank: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--ranks" => args.ranks = it.next().ok_or("--ranks needs a number")?.parse()?,
            "--mpi" => args.mpi = true,
            "--fail-rank" => args.fail_rank = Some(it.next().ok_or("--fail-rank needs a rank")?.parse()?),
            other => return Err(format!("unknown argument {other}; see the top of examples/ddp.rs").into()),
        }
    }
    if !BATCH.is_multiple_of(args.ranks) {
        return Err(format!("--ranks {}: the batch of {BATCH} must split evenly", args.ranks).into());
    }
    Ok(args)
}

/// The digits as 1-channel 8×8 images, split as `examples/digits.rs`
/// does: 1437 to train on, 360 held out.
struct Data {
    x_train: Tensor<f32>,
    y_train: Vec<usize>,
    x_test: Tensor<f32>,
    y_test: Vec<usize>,
}

fn data() -> Result<Data, Box<dyn Error>> {
    let (x, labels) = load_digits()?;
    tapegrad::manual_seed(0);
    let order = tapegrad::randperm(labels.len());
    let (train, test) = order.split_at(labels.len() - 360);
    let images = |rows: Tensor<f32>| rows.reshape(&[rows.shape()[0], 1, 8, 8]);
    let (x_train, y_train) = subset(&x, &labels, train);
    let (x_test, y_test) = subset(&x, &labels, test);
    Ok(Data {
        x_train: images(x_train),
        y_train,
        x_test: images(x_test),
        y_test,
    })
}

/// What a training run ended with.
struct Run {
    accuracy: f32,
    images_per_second: f64,
    parameters: Vec<Vec<f32>>,
}

/// Trains `model` as rank `rank` of `world`: every rank shuffles the same
/// way (the same seed each epoch) and takes its share of each batch.
fn fit(model: &dyn Module<f32>, rank: usize, world: usize, d: &Data, epochs: usize, fail: bool) -> Run {
    let mut opt = Adam::new(model.parameters(), 0.003);
    let share = BATCH / world;
    let start = Instant::now();
    let mut images = 0;
    for epoch in 0..epochs {
        tapegrad::manual_seed(100 + epoch as u64);
        let batches = Batches::new(d.y_train.len(), BATCH).shuffle(true).drop_last(true);
        model.train();
        for (step, idx) in batches.into_iter().enumerate() {
            if fail && step == 2 {
                panic!("rank {rank} fails on purpose (--fail-rank)");
            }
            let (xb, yb) = subset(&d.x_train, &d.y_train, &idx[rank * share..(rank + 1) * share]);
            opt.zero_grad();
            model.forward(&xb).cross_entropy(&yb).backward();
            opt.step();
            images += share;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Run {
        accuracy: accuracy(model, &d.x_test, &d.y_test),
        images_per_second: (images * world) as f64 / seconds,
        parameters: model.parameters().iter().map(Tensor::to_vec).collect(),
    }
}

/// One rank's run over `group`.
fn rank_run<G: ProcessGroup + 'static>(group: G, d: &Data, epochs: usize, fail_rank: Option<usize>) -> Run {
    let (rank, world) = (group.rank(), group.world_size());
    tapegrad::manual_seed(1); // the same initial weights as the single run
                              // Buckets of 8 KiB rather than PyTorch's 25 MiB default: this CNN's
                              // 24 KiB of gradients then go in three buckets, and the first two are
                              // averaged while backward computes the convolutions' gradients.
    let buckets = DdpOptions {
        bucket_bytes: 8 << 10,
        first_bucket_bytes: 8 << 10,
        ..Default::default()
    };
    let model = DistributedDataParallel::with_options(digits_cnn(), group, buckets);
    let run = fit(&model, rank, world, d, epochs, fail_rank == Some(rank));
    let stats = model.stats();
    if rank == 0 {
        println!(
            "rank 0: {} backwards, {} bucket(s) each, {:.0}% of the all-reduce time hidden behind backward",
            stats.backwards,
            stats.buckets,
            100.0 * stats.overlap()
        );
    }
    run
}

fn single(d: &Data, epochs: usize) -> Run {
    tapegrad::manual_seed(1);
    fit(&digits_cnn(), 0, 1, d, epochs, false)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = args()?;
    let epochs = if short_mode() { 1 } else { 40 };
    let d = std::sync::Arc::new(data()?);
    let runs: Vec<Run> = if args.mpi {
        mpi_rank(&d, epochs, args.fail_rank)?
    } else {
        let workers: Vec<_> = ThreadGroup::new(args.ranks)
            .into_iter()
            .map(|group| {
                let d = d.clone();
                std::thread::spawn(move || rank_run(group, &d, epochs, args.fail_rank))
            })
            .collect();
        let mut runs = Vec::new();
        for (rank, w) in workers.into_iter().enumerate() {
            match w.join() {
                Ok(run) => runs.push(run),
                Err(e) => {
                    let msg = e.downcast_ref::<String>().map_or("?", String::as_str);
                    println!("rank {rank} failed: {msg}");
                }
            }
        }
        if runs.len() < args.ranks {
            return Err("a rank failed".into());
        }
        runs.push(single(&d, epochs));
        runs
    };
    let Some(one) = runs.last() else {
        return Ok(()); // an MPI rank other than 0
    };
    let ddp = &runs[0];
    let world = runs.len() - 1;
    for (rank, r) in runs[..world].iter().enumerate() {
        assert_eq!(
            r.parameters, ddp.parameters,
            "rank {rank}'s replica differs from rank 0's"
        );
    }
    println!(
        "{world} replicas ({}): test accuracy {:.1}%, {:.0} images/s; replicas identical",
        if args.mpi { "MPI processes" } else { "threads" },
        100.0 * ddp.accuracy,
        ddp.images_per_second
    );
    println!(
        "one process, whole batches: test accuracy {:.1}%, {:.0} images/s",
        100.0 * one.accuracy,
        one.images_per_second
    );
    let diff = ddp
        .parameters
        .iter()
        .zip(&one.parameters)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0.0f32, f32::max);
    println!(
        "largest weight difference to the one-process run: {diff:.2e} (f32 rounding of the averaged sums)"
    );
    if !short_mode() {
        assert!(
            ddp.accuracy >= 0.95,
            "data-parallel held-out accuracy {} is below 95%",
            ddp.accuracy
        );
        let images = (ddp.accuracy - one.accuracy).abs() * d.y_test.len() as f32;
        assert!(
            images <= 1.5,
            "the data-parallel run scores {images:.0} test images apart from one process"
        );
    }
    Ok(())
}

/// Over MPI: this process is one rank; rank 0 also trains the one-process
/// run and returns every run (the others return none).
#[cfg(feature = "mpi")]
fn mpi_rank(d: &Data, epochs: usize, fail_rank: Option<usize>) -> Result<Vec<Run>, Box<dyn Error>> {
    use tapegrad::distributed::{Elements, MpiGroup};
    let group = std::sync::Arc::new(MpiGroup::world());
    let run = rank_run(group.clone(), d, epochs, fail_rank);
    // Every rank's weights must equal rank 0's.
    let mine: Vec<f32> = run.parameters.concat();
    let mut rank0 = mine.clone();
    group.broadcast(Elements::F32(&mut rank0), 0)?;
    assert_eq!(
        mine,
        rank0,
        "rank {}'s replica differs from rank 0's",
        group.rank()
    );
    if group.rank() != 0 {
        return Ok(Vec::new());
    }
    let mut runs: Vec<Run> = (0..group.world_size())
        .map(|_| Run {
            accuracy: run.accuracy,
            images_per_second: run.images_per_second,
            parameters: run.parameters.clone(),
        })
        .collect();
    runs.push(single(d, epochs));
    Ok(runs)
}

#[cfg(not(feature = "mpi"))]
fn mpi_rank(_: &Data, _: usize, _: Option<usize>) -> Result<Vec<Run>, Box<dyn Error>> {
    Err("--mpi needs the mpi feature: cargo build --release --features mpi --example ddp".into())
}
