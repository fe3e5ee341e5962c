//! Choosing checkpoint segments for a memory budget.
//!
//! A dry run measures, for each layer, the bytes it saves for backward, the
//! bytes of its input, whether it saves its input and its output, and its
//! forward time (the cost of recomputing it). A model of the saved bytes
//! then predicts, for any split of the layers into plain layers and
//! checkpointed segments, the saved bytes at the end of the forward and at
//! the peak (during the backward re-run of one segment). A dynamic
//! programme over segment boundaries picks the split that recomputes the
//! least forward time with that peak under the budget (the model and the
//! programme are in `plan_dp`).
//!
//! The plans are single-level (each layer is recomputed at most once, as
//! Chen et al. 2016); Griewank's binomial schedules recompute some layers
//! several times to go below the √n memory of single-level plans, and are
//! not searched.

use super::inspect::inspect;
use super::plan_dp::Model;
use super::{checkpoint, mib, run_layers, Layer};
use crate::rng::{self, Replay};
use crate::{Float, Tensor};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// What the dry run of [`profile_layers`] measured of one layer.
///
/// ```
/// use tapegrad::prelude::*;
/// use std::sync::Arc;
/// let w = Tensor::<f32>::randn(&[16, 16]).set_requires_grad(true);
/// let layer: tapegrad::Layer<f32> = Arc::new(move |h: &Tensor<f32>| h.matmul(&w).tanh());
/// let x = Tensor::<f32>::randn(&[4, 16]);
/// let p = &tapegrad::profile_layers(&[layer.clone(), layer], &x)[1];
/// assert_eq!(p.input_bytes, 4 * 16 * 4); // the first layer's output
/// assert_eq!(p.saved_bytes, 4 * 16 * 4); // tanh's output
/// assert!(p.saves_input && p.saves_output);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LayerProfile {
    /// The bytes the layer's input adds to
    /// [`memory::saved_bytes`](crate::memory::saved_bytes) when saved (0
    /// for a leaf, or a buffer saved already when the dry run began).
    pub input_bytes: usize,
    /// The bytes the layer saves for backward apart from its input's buffer.
    pub saved_bytes: usize,
    /// Whether it saves its input (or a view of it).
    pub saves_input: bool,
    /// Whether it saves its output's buffer (then the next layer's saving
    /// of its input adds nothing).
    pub saves_output: bool,
    /// Seconds its forward took in the dry run: the cost of recomputing it.
    pub cost_secs: f64,
}

/// Runs `layers` once on `input`, recording, one layer at a time (each
/// layer's graph is dropped before the next runs, so the dry run holds one
/// layer's saves at a time), and measures each as a [`LayerProfile`].
///
/// The random generator is left where it was; each layer is called once.
///
/// ```
/// use std::sync::Arc;
/// use tapegrad::{profile_layers, Layer, Tensor};
/// let layers: Vec<Layer<f32>> = vec![
///     Arc::new(|h: &Tensor<f32>| h.exp()),
///     Arc::new(|h: &Tensor<f32>| h * 2.0),
/// ];
/// let x = Tensor::<f32>::randn(&[10]).set_requires_grad(true);
/// let p = profile_layers(&layers, &x);
/// assert_eq!(p.len(), 2);
/// assert!(p[0].saves_output && !p[0].saves_input); // exp keeps its output
/// assert_eq!((p[0].input_bytes, p[0].saved_bytes), (0, 10 * 4)); // x is the caller's
/// assert_eq!(p[1].saved_bytes, 0); // scaling by a number keeps nothing
/// ```
pub fn profile_layers<T: Float>(layers: &[Layer<T>], input: &Tensor<T>) -> Vec<LayerProfile> {
    let _rng = Replay::new(rng::snapshot());
    let mut x = input.clone();
    let mut profiles = Vec::with_capacity(layers.len());
    for layer in layers {
        let (in_id, input_bytes) = {
            let buf = x.value().buf;
            let counts = buf.countable.load(Ordering::Relaxed) && buf.saved_refs.load(Ordering::Acquire) == 0;
            (Arc::as_ptr(&buf) as usize, if counts { buf.bytes() } else { 0 })
        };
        let start = Instant::now();
        let (y, notes) = inspect(|| layer(&x));
        let cost_secs = start.elapsed().as_secs_f64();
        let out_id = Arc::as_ptr(&y.value().buf) as usize;
        profiles.push(LayerProfile {
            input_bytes,
            saved_bytes: notes
                .iter()
                .filter(|n| n.buf != in_id)
                .map(|n| n.residual.new_bytes)
                .sum(),
            saves_input: notes.iter().any(|n| n.buf == in_id),
            saves_output: notes.iter().any(|n| n.buf == out_id),
            cost_secs,
        });
        // The next layer's input, with this layer's graph dropped.
        x = y.detach().set_requires_grad(y.requires_grad());
    }
    profiles
}

/// A run of consecutive layers in a [`Plan`].
///
/// ```
/// use tapegrad::{LayerProfile, Plan};
/// let layer = LayerProfile { input_bytes: 1000, saved_bytes: 1000, saves_input: false,
///                            saves_output: true, cost_secs: 1.0 };
/// let plan = Plan::from_profiles(vec![layer; 16], 8000);
/// let s = &plan.segments;
/// // The segments cover the layers in order.
/// assert_eq!((s[0].start, s[s.len() - 1].end), (0, 16));
/// assert!(s.windows(2).all(|w| w[0].end == w[1].start));
/// let rerun: usize = s.iter().filter(|s| s.checkpointed).map(|s| s.end - s.start).sum();
/// assert_eq!(rerun, plan.recomputed_layers);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The first layer.
    pub start: usize,
    /// One past the last layer.
    pub end: usize,
    /// Run under a [`checkpoint()`] (else plainly, each layer keeping what it
    /// saves).
    pub checkpointed: bool,
    /// The saved bytes it keeps from the forward until its backward.
    pub kept_bytes: usize,
    /// For a checkpointed segment, the bytes its re-run saves (held during
    /// its backward); 0 for a plain one.
    pub rerun_bytes: usize,
}

/// Checkpoint segments chosen for a memory budget by [`plan_checkpoints`],
/// with the predicted saved bytes. `Display` prints it as a table.
///
/// ```
/// use tapegrad::prelude::*;
/// use std::sync::Arc;
/// let layers: Vec<tapegrad::Layer<f32>> = (0..16)
///     .map(|_| {
///         let w = (Tensor::<f32>::randn(&[32, 32]) * 0.2).detach().set_requires_grad(true);
///         Arc::new(move |h: &Tensor<f32>| h.matmul(&w).tanh()) as tapegrad::Layer<f32>
///     })
///     .collect();
/// let x = Tensor::<f32>::randn(&[8, 32]);
/// let layer_bytes = 8 * 32 * 4;
/// let plan = tapegrad::plan_checkpoints(&layers, 8 * layer_bytes, &x);
/// assert!(plan.predicted_peak_bytes <= 8 * layer_bytes);
/// assert!(plan.recomputed_layers > 0);
/// println!("{plan}");
/// plan.run(&layers, &x).sum().backward(); // reuse it every step
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The layers in order, split into plain and checkpointed runs.
    pub segments: Vec<Segment>,
    /// The budget it was planned for.
    pub budget_bytes: usize,
    /// Predicted bytes the layers add to
    /// [`memory::saved_bytes`](crate::memory::saved_bytes) by the end of
    /// the forward.
    pub predicted_forward_bytes: usize,
    /// Predicted high-water mark of those bytes during forward and backward
    /// (at most the budget).
    pub predicted_peak_bytes: usize,
    /// How many layers backward runs again.
    pub recomputed_layers: usize,
    /// Their forward time in the dry run, in seconds.
    pub recomputed_secs: f64,
    /// The measurements the plan was made from.
    pub profiles: Vec<LayerProfile>,
}

/// The budget of [`try_plan_checkpoints`] is below what any plan achieves.
///
/// ```
/// let e = tapegrad::BudgetError { budget_bytes: 10, minimum_bytes: 20 };
/// assert!(e.to_string().contains("20 bytes"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetError {
    /// The budget asked for.
    pub budget_bytes: usize,
    /// The smallest peak of saved bytes a plan achieves for these layers.
    pub minimum_bytes: usize,
}

impl fmt::Display for BudgetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checkpoint planner: a budget of {} bytes ({}) of saved activations is too small for these \
             layers: the most frugal plan needs {} bytes ({})",
            self.budget_bytes,
            mib(self.budget_bytes),
            self.minimum_bytes,
            mib(self.minimum_bytes)
        )
    }
}

impl std::error::Error for BudgetError {}

/// Measures `layers` on `input` ([`profile_layers`]) and plans checkpoint
/// segments that keep the saved bytes under `budget_bytes` while
/// recomputing the least forward time ([`Plan::from_profiles`]). Run it
/// with [`Plan::run`]; see [`Plan`] for an example.
///
/// The budget is for the bytes the layers add to
/// [`memory::saved_bytes`](crate::memory::saved_bytes) (activations saved
/// for backward), not for the whole heap: gradients and the transient
/// values of a single op are not in it.
///
/// ```
/// use std::sync::Arc;
/// use tapegrad::prelude::*;
/// let layers: Vec<tapegrad::Layer<f32>> =
///     (0..8).map(|_| Arc::new(|h: &Tensor<f32>| h.tanh()) as tapegrad::Layer<f32>).collect();
/// let x = Tensor::<f32>::randn(&[1024]).set_requires_grad(true);
/// let all = 8 * 1024 * 4; // every tanh keeps its output
/// assert_eq!(tapegrad::plan_checkpoints(&layers, all, &x).recomputed_layers, 0);
/// let plan = tapegrad::plan_checkpoints(&layers, all / 2, &x);
/// assert!(plan.predicted_peak_bytes <= all / 2 && plan.recomputed_layers > 0);
/// ```
///
/// **Panics** if no plan fits in `budget_bytes`, naming the smallest budget
/// that fits ([`try_plan_checkpoints`] returns it instead).
#[track_caller]
pub fn plan_checkpoints<T: Float>(layers: &[Layer<T>], budget_bytes: usize, input: &Tensor<T>) -> Plan {
    Plan::from_profiles(profile_layers(layers, input), budget_bytes)
}

/// [`plan_checkpoints`], with an error instead of a panic when no plan
/// fits.
///
/// ```
/// use tapegrad::prelude::*;
/// use std::sync::Arc;
/// let layers: Vec<tapegrad::Layer<f32>> = (0..4).map(|_| Arc::new(|h: &Tensor<f32>| h.tanh()) as tapegrad::Layer<f32>).collect();
/// let x = Tensor::<f32>::randn(&[256]).set_requires_grad(true);
/// let err = tapegrad::try_plan_checkpoints(&layers, 100, &x).unwrap_err();
/// assert!(err.minimum_bytes > 100);
/// assert!(tapegrad::try_plan_checkpoints(&layers, err.minimum_bytes, &x).is_ok());
/// ```
pub fn try_plan_checkpoints<T: Float>(
    layers: &[Layer<T>],
    budget_bytes: usize,
    input: &Tensor<T>,
) -> Result<Plan, BudgetError> {
    Plan::try_from_profiles(profile_layers(layers, input), budget_bytes)
}

/// Runs `layers` on `input` with checkpoints planned for `budget_bytes`
/// of saved activations: [`plan_checkpoints`] then [`Plan::run`]. The plan
/// costs a dry run of the layers; to train, plan once and call
/// [`Plan::run`] every step. Under [`no_grad`](crate::no_grad) it just runs
/// the layers.
///
/// ```
/// use tapegrad::prelude::*;
/// use std::sync::Arc;
/// let w = Tensor::<f64>::randn(&[8, 8]).set_requires_grad(true);
/// let layers: Vec<tapegrad::Layer<f64>> = (0..6)
///     .map(|_| {
///         let w = w.clone();
///         Arc::new(move |h: &Tensor<f64>| h.matmul(&w).tanh()) as tapegrad::Layer<f64>
///     })
///     .collect();
/// let x = Tensor::<f64>::randn(&[4, 8]);
/// let y = tapegrad::checkpoint_planned(&layers, 3 * 4 * 8 * 8, &x);
/// y.sum().backward();
/// assert!(w.grad().is_some());
/// ```
///
/// **Panics** as [`plan_checkpoints`].
#[track_caller]
pub fn checkpoint_planned<T: Float>(
    layers: &[Layer<T>],
    budget_bytes: usize,
    input: &Tensor<T>,
) -> Tensor<T> {
    if !crate::is_grad_enabled() {
        return run_layers(layers, input);
    }
    plan_checkpoints(layers, budget_bytes, input).run(layers, input)
}

impl Plan {
    /// Plans from measured (or made-up) layer profiles: the split into
    /// plain layers and checkpointed segments that recomputes the least
    /// `cost_secs` with the predicted peak of saved bytes at most
    /// `budget_bytes`; among equally cheap splits, the one keeping least at
    /// the end of the forward. A dynamic programme over segment boundaries:
    /// O(n² · 4n) steps for n layers.
    ///
    /// ```
    /// use tapegrad::{LayerProfile, Plan};
    /// // 16 equal layers, each saving its output (1000 bytes), as tanh does.
    /// let layer = LayerProfile { input_bytes: 1000, saved_bytes: 1000, saves_input: false,
    ///                            saves_output: true, cost_secs: 1.0 };
    /// let plan = Plan::from_profiles(vec![layer; 16], 8000);
    /// assert!(plan.predicted_peak_bytes <= 8000);
    /// let plain = Plan::from_profiles(plan.profiles.clone(), 16_000);
    /// assert_eq!(plain.recomputed_layers, 0);
    /// ```
    ///
    /// **Panics** if no plan fits, naming the smallest budget that does.
    #[track_caller]
    pub fn from_profiles(profiles: Vec<LayerProfile>, budget_bytes: usize) -> Plan {
        match Plan::try_from_profiles(profiles, budget_bytes) {
            Ok(plan) => plan,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`Plan::from_profiles`], with an error instead of a panic when no
    /// plan fits.
    ///
    /// ```
    /// use tapegrad::{LayerProfile, Plan};
    /// let layer = LayerProfile { input_bytes: 10, saved_bytes: 10, saves_input: false,
    ///                            saves_output: true, cost_secs: 1.0 };
    /// let err = Plan::try_from_profiles(vec![layer.clone(); 9], 30).unwrap_err();
    /// assert!(err.minimum_bytes > 30);
    /// let plan = Plan::try_from_profiles(vec![layer; 9], err.minimum_bytes).unwrap();
    /// assert_eq!(plan.predicted_peak_bytes, err.minimum_bytes);
    /// ```
    pub fn try_from_profiles(profiles: Vec<LayerProfile>, budget_bytes: usize) -> Result<Plan, BudgetError> {
        let model = Model { p: &profiles };
        if !model.feasible(budget_bytes) {
            return Err(BudgetError {
                budget_bytes,
                minimum_bytes: model.minimum(),
            });
        }
        let mut segments = model.best(budget_bytes);
        let (forward, peak) = model.simulate(&mut segments);
        let recomputed = || {
            segments
                .iter()
                .filter(|s| s.checkpointed)
                .flat_map(|s| s.start..s.end)
        };
        let recomputed_layers = recomputed().count();
        let recomputed_secs = recomputed().fold(0.0, |t, l| t + profiles[l].cost_secs);
        Ok(Plan {
            budget_bytes,
            predicted_forward_bytes: forward,
            predicted_peak_bytes: peak,
            recomputed_layers,
            recomputed_secs,
            segments,
            profiles,
        })
    }

    /// Runs `layers` on `input` as planned: each checkpointed segment under
    /// [`checkpoint()`], the plain layers as they are.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tapegrad::prelude::*;
    /// let layers: Vec<tapegrad::Layer<f64>> =
    ///     (0..6).map(|_| Arc::new(|h: &Tensor<f64>| h.sin()) as tapegrad::Layer<f64>).collect();
    /// let x = Tensor::<f64>::randn(&[64]).set_requires_grad(true);
    /// let plan = tapegrad::plan_checkpoints(&layers, 3 * 64 * 8, &x);
    /// assert!(plan.recomputed_layers > 0);
    /// plan.run(&layers, &x).sum().backward();
    /// let planned = x.grad().unwrap().to_vec();
    /// x.zero_grad();
    /// layers.iter().fold(x.clone(), |h, layer| layer(&h)).sum().backward();
    /// assert_eq!(planned, x.grad().unwrap().to_vec()); // as without checkpoints
    /// ```
    ///
    /// **Panics** if the segments do not cover `layers` in order (a plan
    /// made for another number of layers).
    #[track_caller]
    pub fn run<T: Float>(&self, layers: &[Layer<T>], input: &Tensor<T>) -> Tensor<T> {
        let mut next = 0;
        for s in &self.segments {
            assert!(
                s.start == next && s.end > s.start,
                "Plan::run: the segments must cover the layers in order; segment {}..{} follows layer {next}",
                s.start,
                s.end
            );
            next = s.end;
        }
        assert!(
            next == layers.len(),
            "Plan::run: the plan is for {next} layers, but {} were given (plan again for these layers)",
            layers.len()
        );
        let mut x = input.clone();
        for s in &self.segments {
            x = if s.checkpointed {
                let part: Vec<Layer<T>> = layers[s.start..s.end].to_vec();
                checkpoint(move |xs| run_layers(&part, &xs[0]), &[x])
            } else {
                run_layers(&layers[s.start..s.end], &x)
            };
        }
        x
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.profiles.len();
        writeln!(
            f,
            "checkpoint plan for {n} layers, budget {} of saved activations",
            mib(self.budget_bytes)
        )?;
        for s in &self.segments {
            let layers = format!("layers {}..{}", s.start, s.end);
            if s.checkpointed {
                writeln!(
                    f,
                    "  {layers:<16} checkpointed  keeps {}, its re-run holds {}",
                    mib(s.kept_bytes),
                    mib(s.rerun_bytes)
                )?;
            } else {
                writeln!(f, "  {layers:<16} plain         keeps {}", mib(s.kept_bytes))?;
            }
        }
        let total = self.profiles.iter().fold(0.0, |t, p| t + p.cost_secs);
        let share = if total > 0.0 {
            100.0 * self.recomputed_secs / total
        } else {
            0.0
        };
        writeln!(
            f,
            "predicted saved bytes: {} at the end of forward, {} at the peak",
            mib(self.predicted_forward_bytes),
            mib(self.predicted_peak_bytes)
        )?;
        write!(
            f,
            "recomputed: {} of {n} layers ({share:.0}% of the forward's time in the dry run)",
            self.recomputed_layers
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(x: usize, e: usize, si: bool, so: bool, cost: f64) -> LayerProfile {
        LayerProfile {
            input_bytes: x,
            saved_bytes: e,
            saves_input: si,
            saves_output: so,
            cost_secs: cost,
        }
    }

    /// Every split of n layers into plain layers and checkpointed segments.
    fn all_plans(n: usize) -> Vec<Vec<Segment>> {
        let mut plans = Vec::new();
        // Bits 0..n-1: a cut after layer i; bits n..: segment kinds.
        for cuts in 0..1u32 << (n - 1) {
            let mut bounds = vec![0];
            for i in 0..n - 1 {
                if cuts >> i & 1 == 1 {
                    bounds.push(i + 1);
                }
            }
            bounds.push(n);
            let m = bounds.len() - 1;
            for kinds in 0..1u32 << m {
                plans.push(
                    (0..m)
                        .map(|s| Segment {
                            start: bounds[s],
                            end: bounds[s + 1],
                            checkpointed: kinds >> s & 1 == 1,
                            kept_bytes: 0,
                            rerun_bytes: 0,
                        })
                        .collect(),
                );
            }
        }
        plans
    }

    #[test]
    fn the_programme_finds_the_cheapest_plan_that_brute_force_finds() {
        // A few irregular chains: the DP's cost and feasibility must match
        // exhaustive search under the same model, for every budget.
        let chains = [
            vec![
                layer(0, 40, true, true, 1.0),
                layer(40, 10, true, false, 3.0),
                layer(20, 70, false, true, 1.0),
                layer(70, 5, true, true, 2.0),
                layer(5, 30, true, false, 1.0),
                layer(30, 30, false, true, 4.0),
                layer(30, 60, true, true, 1.0),
            ],
            vec![layer(16, 16, true, true, 1.0); 8],
            vec![
                layer(8, 64, false, false, 5.0),
                layer(8, 1, true, true, 1.0),
                layer(1, 64, true, false, 1.0),
                layer(8, 8, true, true, 2.0),
                layer(8, 8, false, true, 2.0),
                layer(8, 32, true, true, 1.0),
            ],
            // Dear layers among cheap ones with the same bytes, costs below
            // 4n seconds in all: a plan that counts layers, not their costs,
            // recomputes a dear one.
            [1.0, 0.1, 0.1, 0.1, 1.0]
                .map(|c| layer(16, 16, true, true, c))
                .to_vec(),
            [0.1, 0.1, 1.0, 0.1, 0.1]
                .map(|c| layer(16, 16, true, true, c))
                .to_vec(),
            [0.1, 1.0, 0.1, 1.0, 0.1, 0.1]
                .map(|c| layer(16, 16, false, true, c))
                .to_vec(),
        ];
        for p in &chains {
            let model = Model { p };
            let n = p.len();
            let plans = all_plans(n);
            let units = {
                let total: f64 = p.iter().map(|l| l.cost_secs).sum();
                let unit = total / (4 * n) as f64;
                p.iter()
                    .map(|l| ((l.cost_secs / unit).round() as usize).max(1))
                    .collect::<Vec<_>>()
            };
            let cost = |segs: &[Segment]| -> usize {
                segs.iter()
                    .filter(|s| s.checkpointed)
                    .flat_map(|s| s.start..s.end)
                    .map(|l| units[l])
                    .sum()
            };
            let scored: Vec<(usize, usize)> = plans
                .iter()
                .map(|segs| {
                    let mut segs = segs.clone();
                    (model.simulate(&mut segs).1, cost(&segs))
                })
                .collect();
            let minimum = scored.iter().map(|s| s.0).min().unwrap();
            assert_eq!(model.minimum(), minimum);
            let top = scored.iter().map(|s| s.0).max().unwrap();
            for budget in 0..=top + 1 {
                let brute = scored.iter().filter(|s| s.0 <= budget).map(|s| s.1).min();
                assert_eq!(model.feasible(budget), brute.is_some(), "budget {budget}");
                if let Some(brute) = brute {
                    let mut segs = model.best(budget);
                    let (_, peak) = model.simulate(&mut segs);
                    assert!(peak <= budget, "budget {budget}: peak {peak}");
                    assert_eq!(cost(&segs), brute, "budget {budget}: {segs:?}");
                    assert!(
                        segs.windows(2).all(|w| w[0].checkpointed || w[1].checkpointed),
                        "consecutive plain layers make one segment: {segs:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn uniform_layers_beat_square_root_segments() {
        // 64 layers saving their output (b bytes each). Equal segments of √n
        // keep about 2·√64 = 16 layers' worth; segments that shrink towards
        // the end (the k-th re-run happens with k inputs kept) need only
        // about √(2·64) ≈ 11.3.
        let b = 100;
        let p = vec![layer(b, b, true, true, 1.0); 64];
        let model = Model { p: &p };
        let min = model.minimum();
        assert!((11 * b..=12 * b).contains(&min), "minimum {min}");
        let mut segs = model.best(min);
        let (_, peak) = model.simulate(&mut segs);
        assert_eq!(peak, min);
        let lengths: Vec<usize> = segs
            .iter()
            .filter(|s| s.checkpointed)
            .map(|s| s.end - s.start)
            .collect();
        assert!(lengths.windows(2).all(|w| w[0] >= w[1]), "{segs:?}");
    }
}
