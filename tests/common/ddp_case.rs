//! One data-parallel training case, run over threads (tests/distributed.rs)
//! and over MPI (tests/distributed_mpi.rs): N ranks, each on its shard of
//! a batch, against one process on the whole batch.

#![allow(dead_code)] // each test crate uses its own subset

use tapegrad::distributed::{DdpOptions, DistributedDataParallel, ProcessGroup};
use tapegrad::nn::{Linear, Module, Sequential, Tanh};
use tapegrad::optim::{Adam, Optimizer, Sgd};
use tapegrad::prelude::*;

pub const BATCH: usize = 24;
pub const STEPS: usize = 5;

/// Which optimizer.
#[derive(Clone, Copy, Debug)]
pub enum Opt {
    SgdMomentum,
    Adam,
}

/// 4 -> 8 -> 8 -> 1 with tanh; five parameters besides the biases.
pub fn model() -> Sequential<f64> {
    Sequential::new()
        .add(Linear::new(4, 8))
        .add(Tanh)
        .add(Linear::new(8, 8))
        .add(Tanh)
        .add(Linear::new(8, 1))
}

/// Sets every parameter of `m` to fixed values (rank 0's and the single
/// process's starting point; the other ranks start from their random
/// ones, which DDP overwrites).
pub fn set_fixed(m: &dyn Module<f64>) {
    for (k, p) in m.parameters().iter().enumerate() {
        let v: Vec<f64> = (0..p.numel())
            .map(|i| (0.37 * i as f64 + k as f64).sin() * 0.5)
            .collect();
        no_grad(|| p.copy_(&Tensor::from_vec(v, p.shape())));
    }
}

/// This rank's replica before DDP: the fixed values on rank 0, random
/// ones elsewhere.
pub fn replica(rank: usize) -> Sequential<f64> {
    let m = model();
    if rank == 0 {
        set_fixed(&m);
    }
    m
}

/// Every parameter's `.grad`.
pub fn grads(m: &dyn Module<f64>) -> Vec<Vec<f64>> {
    m.parameters()
        .iter()
        .map(|p| p.grad().unwrap().to_vec())
        .collect()
}

/// One process, gradients accumulated over two backwards, one per half
/// of the batch: what the ranks' accumulated averages must equal.
pub fn accumulated_over_halves() -> Vec<Vec<f64>> {
    let (x, y) = batch();
    let m = model();
    set_fixed(&m);
    for half in 0..2 {
        let rows = |t: &Tensor<f64>| t.narrow(0, half * BATCH / 2, BATCH / 2);
        m.forward(&rows(&x)).mse_loss(&rows(&y)).backward();
    }
    grads(&m)
}

/// The whole batch: inputs and targets from fixed formulas.
pub fn batch() -> (Tensor<f64>, Tensor<f64>) {
    let x: Vec<f64> = (0..BATCH * 4)
        .map(|i| ((i * 7 % 11) as f64 / 5.0) - 1.0)
        .collect();
    let y: Vec<f64> = (0..BATCH).map(|i| (i as f64 * 0.3).cos()).collect();
    (Tensor::from_vec(x, &[BATCH, 4]), Tensor::from_vec(y, &[BATCH, 1]))
}

pub fn optimizer(params: Vec<Tensor<f64>>, opt: Opt) -> Box<dyn Optimizer<f64>> {
    match opt {
        Opt::SgdMomentum => Box::new(Sgd::new(params, 0.1).momentum(0.9)),
        Opt::Adam => Box::new(Adam::new(params, 0.01)),
    }
}

fn train(model: &dyn Module<f64>, x: &Tensor<f64>, y: &Tensor<f64>, opt: Opt) -> Vec<Vec<f64>> {
    let mut opt = optimizer(model.parameters(), opt);
    for _ in 0..STEPS {
        opt.zero_grad();
        model.forward(x).mse_loss(y).backward();
        opt.step();
    }
    model.parameters().iter().map(|p| p.to_vec()).collect()
}

/// One process, the whole batch: the parameters after `STEPS` steps.
pub fn single_process(opt: Opt) -> Vec<Vec<f64>> {
    let m = model();
    set_fixed(&m);
    let (x, y) = batch();
    train(&m, &x, &y, opt)
}

/// This rank, on its shard: its parameters after `STEPS` steps (small
/// buckets, so that there are several).
pub fn one_rank<G: ProcessGroup + 'static>(group: G, opt: Opt) -> Vec<Vec<f64>> {
    let (rank, n) = (group.rank(), group.world_size());
    let m = replica(rank);
    let options = DdpOptions {
        bucket_bytes: 300,
        first_bucket_bytes: 100,
        ..Default::default()
    };
    let ddp = DistributedDataParallel::with_options(m, group, options);
    let (x, y) = batch();
    let shard = BATCH / n;
    let (x, y) = (x.narrow(0, rank * shard, shard), y.narrow(0, rank * shard, shard));
    train(&ddp, &x, &y, opt)
}

/// The largest difference between two parameter lists.
pub fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(p, q)| p.iter().zip(q).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f64::max)
}
