//! Gradient boosting with second-order steps, as XGBoost does it, where
//! tapegrad supplies the derivatives: for any loss written as a per-sample
//! forward with tensor ops, two backward passes give every sample's
//! gradient and Hessian diagonal entry, and depth-limited regression trees
//! are boosted on them.
//!
//! **The step.** The model is a sum of trees, F(x) = b + η Σₜ treeₜ(x). Round
//! t has the predictions fᵢ and looks for the tree w(x) that lowers
//! L = Σᵢ l(yᵢ, fᵢ + w(xᵢ)) most. Taylor to second order in w:
//! L ≈ const + Σᵢ (gᵢ wᵢ + ½ hᵢ wᵢ²), with gᵢ = ∂l/∂fᵢ and hᵢ = ∂²l/∂fᵢ². A leaf
//! holding the samples I, with G = Σ_{i∈I} gᵢ and H = Σ_{i∈I} hᵢ, and an L2
//! penalty ½ λ w² on its weight, is best at w = −G/(H + λ), where it lowers
//! the loss by ½ G²/(H + λ). Splitting a leaf into a left and a right part
//! gains ½ [G_L²/(H_L + λ) + G_R²/(H_R + λ) − G²/(H + λ)]: the tree learner
//! below grows each node by the split of largest gain (Chen and Guestrin,
//! "XGBoost: A Scalable Tree Boosting System", KDD 2016, eqs. 5–7).
//!
//! **The derivatives.** XGBoost asks a custom objective for g and h written
//! out by hand. Here `examples/common/second_order.rs` takes them from the
//! loss's forward: one backward of L with `create_graph` gives g as a
//! function of f, and since sample i's loss depends on fᵢ alone, the Hessian
//! is diagonal and one more backward, of Σᵢ gᵢ, gives ∂(Σⱼ gⱼ)/∂fᵢ = hᵢ for
//! all samples at once (that file's comment says more, and what a coupled
//! loss would give instead). Every round checks g and h of the squared and
//! logistic losses against their closed forms (f − y and 1; p − y and
//! p (1 − p) with p = σ(f)) to 1e-12. The pseudo-Huber loss is written as its
//! forward only (`tests/boosting_grads.rs` checks its g and h against the
//! closed forms); its Hessian vanishes for large residuals, where a Newton
//! step overshoots, so its leaf weights are bounded (XGBoost's
//! `max_delta_step`).
//!
//! **The data** (`examples/data/README.md`): the Palmer penguins' body mass
//! from species, island, sex and bill and flipper sizes, with squared and
//! pseudo-Huber loss; the Breast Cancer Wisconsin (Diagnostic) samples,
//! malignant or benign, with logistic loss. Each is split 80/20 into
//! training and held-out rows. Each run prints its first tree, and the
//! error on both sets every few rounds.
//!
//! Run: `cargo run --release --example boosting`
//! (`TAPEGRAD_EXAMPLE_SHORT=1` boosts three rounds only, for CI).

mod common;
#[path = "common/second_order.rs"]
mod second_order;

use common::short_mode;
use flate2::read::GzDecoder;
use second_order::{derivatives, logistic, pseudo_huber, squared, Loss};
use std::error::Error;
use std::io::Read;
use tapegrad::Tensor;

/// Samples as rows of features, with one target each.
struct Data {
    /// The feature names, one per column.
    features: Vec<String>,
    /// Row-major, `targets.len()` rows of `features.len()` values.
    x: Vec<f64>,
    targets: Vec<f64>,
}

impl Data {
    fn len(&self) -> usize {
        self.targets.len()
    }

    fn row(&self, i: usize) -> &[f64] {
        let d = self.features.len();
        &self.x[i * d..(i + 1) * d]
    }

    /// The rows `idx`, in that order.
    fn subset(&self, idx: &[usize]) -> Data {
        Data {
            features: self.features.clone(),
            x: idx.iter().flat_map(|&i| self.row(i).iter().copied()).collect(),
            targets: idx.iter().map(|&i| self.targets[i]).collect(),
        }
    }

    /// A random 80/20 split into training and held-out rows.
    fn split(&self) -> (Data, Data) {
        let order = tapegrad::randperm(self.len());
        let (train, test) = order.split_at(self.len() * 4 / 5);
        (self.subset(train), self.subset(test))
    }
}

/// The path of a file in `examples/data/`.
fn data_path(name: &str) -> String {
    format!("{}/examples/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The Palmer penguins with no missing value: body mass in grams, from
/// one-hot species and island, sex (1 for male) and the three sizes.
fn load_penguins() -> Result<Data, Box<dyn Error>> {
    let path = data_path("penguins.csv");
    let text = std::fs::read_to_string(&path)?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or(format!("{path}: empty"))?.split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or(format!("{path}: no column {name}"))
    };
    let [species, island, sex, mass] = [
        column("species")?,
        column("island")?,
        column("sex")?,
        column("body_mass_g")?,
    ];
    let sizes = [
        column("bill_length_mm")?,
        column("bill_depth_mm")?,
        column("flipper_length_mm")?,
    ];
    let (species_names, island_names) = (
        ["Adelie", "Chinstrap", "Gentoo"],
        ["Biscoe", "Dream", "Torgersen"],
    );
    let one_hot = |value: &str, names: &[&str], line: usize| -> Result<Vec<f64>, String> {
        if !names.contains(&value) {
            return Err(format!(
                "{path}:{line}: unknown value {value:?}, expected one of {names:?}"
            ));
        }
        Ok(names.iter().map(|n| f64::from(u8::from(*n == value))).collect())
    };
    let mut features: Vec<String> = species_names
        .iter()
        .chain(&island_names)
        .map(|n| n.to_string())
        .collect();
    features.extend(["male", "bill_length_mm", "bill_depth_mm", "flipper_length_mm"].map(String::from));
    let (mut x, mut targets) = (Vec::new(), Vec::new());
    for (i, line) in lines.enumerate() {
        let line_no = i + 2;
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != header.len() {
            return Err(format!(
                "{path}:{line_no}: {} fields, expected {}",
                fields.len(),
                header.len()
            )
            .into());
        }
        if fields.contains(&"NA") {
            continue;
        }
        x.extend(one_hot(fields[species], &species_names, line_no)?);
        x.extend(one_hot(fields[island], &island_names, line_no)?);
        x.push(one_hot(fields[sex], &["male", "female"], line_no)?[0]);
        for c in sizes {
            x.push(fields[c].parse()?);
        }
        targets.push(fields[mass].parse()?);
    }
    Ok(Data { features, x, targets })
}

/// The Breast Cancer Wisconsin (Diagnostic) samples: 30 features each, the
/// target 1 for malignant and 0 for benign.
fn load_breast_cancer() -> Result<Data, Box<dyn Error>> {
    let path = data_path("breast_cancer.csv.gz");
    let mut text = String::new();
    GzDecoder::new(std::fs::File::open(&path)?).read_to_string(&mut text)?;
    let mut lines = text.lines();
    // "569,30,malignant,benign": rows, features, the names of classes 0 and 1.
    let header: Vec<&str> = lines.next().ok_or(format!("{path}: empty"))?.split(',').collect();
    let (rows, d): (usize, usize) = match header[..] {
        [rows, d, "malignant", "benign"] => (rows.parse()?, d.parse()?),
        _ => {
            return Err(
                format!("{path}:1: header {header:?}, expected rows,features,malignant,benign").into(),
            )
        }
    };
    let (mut x, mut targets) = (Vec::new(), Vec::new());
    for (i, line) in lines.enumerate() {
        let fields: Vec<f64> = line.split(',').map(str::parse).collect::<Result<_, _>>()?;
        if fields.len() != d + 1 {
            return Err(format!("{path}:{}: {} fields, expected {}", i + 2, fields.len(), d + 1).into());
        }
        x.extend(&fields[..d]);
        targets.push(if fields[d] == 0.0 { 1.0 } else { 0.0 });
    }
    if targets.len() != rows {
        return Err(format!("{path}: {} rows, the header says {rows}", targets.len()).into());
    }
    // Column j is measurement j % 10, its mean, standard error and worst
    // value in turn (scikit-learn's `breast_cancer.rst`).
    let measurements = [
        "radius",
        "texture",
        "perimeter",
        "area",
        "smoothness",
        "compactness",
        "concavity",
        "concave points",
        "symmetry",
        "fractal dimension",
    ];
    let features: Vec<String> = ["mean", "SE", "worst"]
        .iter()
        .flat_map(|stat| measurements.map(|m| format!("{stat} {m}")))
        .collect();
    if features.len() != d {
        return Err(format!("{path}: {d} features, expected {}", features.len()).into());
    }
    Ok(Data { features, x, targets })
}

/// A regression tree: each split sends a row left when its feature is
/// below the threshold; each leaf holds a weight.
enum Tree {
    Leaf(f64),
    Split {
        feature: usize,
        threshold: f64,
        left: Box<Tree>,
        right: Box<Tree>,
    },
}

impl Tree {
    fn predict(&self, row: &[f64]) -> f64 {
        match self {
            Tree::Leaf(w) => *w,
            Tree::Split {
                feature,
                threshold,
                left,
                right,
            } => {
                if row[*feature] < *threshold {
                    left.predict(row)
                } else {
                    right.predict(row)
                }
            }
        }
    }

    /// The tree as indented lines, features by name.
    fn print(&self, features: &[String], depth: usize) {
        let indent = "  ".repeat(depth + 1);
        match self {
            Tree::Leaf(w) => println!("{indent}leaf {w:+.1}"),
            Tree::Split {
                feature,
                threshold,
                left,
                right,
            } => {
                println!("{indent}{} < {threshold}:", features[*feature]);
                left.print(features, depth + 1);
                println!("{indent}else:");
                right.print(features, depth + 1);
            }
        }
    }
}

/// How trees grow: the depth limit, the L2 penalty λ on leaf weights, the
/// least Hessian sum a child may hold (XGBoost's `min_child_weight`), and the
/// largest leaf weight (XGBoost's `max_delta_step`; infinite for none).
struct TreeParams {
    max_depth: usize,
    lambda: f64,
    min_child_weight: f64,
    max_delta_step: f64,
}

impl TreeParams {
    /// The weight of a leaf with gradient sum `g` and Hessian sum `h`, the
    /// minimum −G/(H + λ) of G w + ½ (H + λ) w² clipped to ±`max_delta_step`,
    /// and by how much it lowers that second-order loss: ½ G²/(H + λ) when
    /// not clipped.
    fn leaf(&self, g: f64, h: f64) -> (f64, f64) {
        let w = (-g / (h + self.lambda)).clamp(-self.max_delta_step, self.max_delta_step);
        (w, -(g * w + 0.5 * (h + self.lambda) * w * w))
    }
}

/// A split of a node: rows with `feature` below `threshold` go left.
struct SplitChoice {
    feature: usize,
    threshold: f64,
    gain: f64,
}

/// The tree of at most `max_depth` levels below this node that holds the
/// training rows `rows`, with the derivatives `g` and `h` of every training
/// row: each node takes the split of largest gain, if any gains; each leaf
/// weighs −G/(H + λ) (clipped to `max_delta_step`).
fn grow(data: &Data, g: &[f64], h: &[f64], rows: Vec<usize>, depth: usize, params: &TreeParams) -> Tree {
    let split = (depth < params.max_depth)
        .then(|| best_split(data, g, h, &rows, params))
        .flatten();
    match split {
        Some(SplitChoice {
            feature, threshold, ..
        }) => {
            let (left, right) = rows.into_iter().partition(|&i| data.row(i)[feature] < threshold);
            Tree::Split {
                feature,
                threshold,
                left: Box::new(grow(data, g, h, left, depth + 1, params)),
                right: Box::new(grow(data, g, h, right, depth + 1, params)),
            }
        }
        None => {
            let (gs, hs) = sums(g, h, &rows);
            Tree::Leaf(params.leaf(gs, hs).0)
        }
    }
}

/// Σ g and Σ h over `rows`.
fn sums(g: &[f64], h: &[f64], rows: &[usize]) -> (f64, f64) {
    rows.iter()
        .fold((0.0, 0.0), |(gs, hs), &i| (gs + g[i], hs + h[i]))
}

/// The exact greedy search: for each feature, the rows sorted by it and
/// every threshold between two distinct values tried, scoring what the two
/// children's leaves lower the loss by, less what one leaf would:
/// ½ [G_L²/(H_L + λ) + G_R²/(H_R + λ) − G²/(H + λ)] when no weight is
/// clipped. `None` when no split gains or every split leaves a child below
/// `min_child_weight`.
fn best_split(data: &Data, g: &[f64], h: &[f64], rows: &[usize], params: &TreeParams) -> Option<SplitChoice> {
    let (g_all, h_all) = sums(g, h, rows);
    let score = |gs: f64, hs: f64| params.leaf(gs, hs).1;
    let mut best: Option<SplitChoice> = None;
    let mut sorted = rows.to_vec();
    for feature in 0..data.features.len() {
        let value = |i: usize| data.row(i)[feature];
        sorted.sort_by(|&a, &b| value(a).total_cmp(&value(b)));
        let (mut g_left, mut h_left) = (0.0, 0.0);
        for pair in sorted.windows(2) {
            g_left += g[pair[0]];
            h_left += h[pair[0]];
            let (lo, hi) = (value(pair[0]), value(pair[1]));
            let (g_right, h_right) = (g_all - g_left, h_all - h_left);
            if lo == hi || h_left < params.min_child_weight || h_right < params.min_child_weight {
                continue;
            }
            let gain = score(g_left, h_left) + score(g_right, h_right) - score(g_all, h_all);
            if gain > best.as_ref().map_or(0.0, |b| b.gain) {
                best = Some(SplitChoice {
                    feature,
                    threshold: 0.5 * (lo + hi),
                    gain,
                });
            }
        }
    }
    best
}

/// The pseudo-Huber loss's scale: residuals well below it cost about ½ r²,
/// those well above about δ |r|.
const DELTA: f64 = 300.0;

/// One sample's g and h in closed form: (f, y) ↦ (g, h).
type ClosedForm = fn(f64, f64) -> (f64, f64);

/// What one boosting run learns with.
struct Objective<'a> {
    name: &'a str,
    loss: &'a Loss,
    /// g and h in closed form, where known: tapegrad's must match to 1e-12.
    closed_form: Option<ClosedForm>,
    /// Every sample's prediction before the first tree.
    base: f64,
    /// How the predictions on a data set are reported each round.
    report: fn(&[f64], &Data) -> String,
}

/// Boosts `rounds` trees with learning rate `eta` on `train`; prints the
/// first tree and, every few rounds, both sets' reports; returns the final
/// predictions on `test`.
fn boost(
    objective: &Objective,
    train: &Data,
    test: &Data,
    params: &TreeParams,
    eta: f64,
    rounds: usize,
) -> Vec<f64> {
    println!(
        "== {}: {rounds} trees of depth ≤ {}, η = {eta}, λ = {}, max_delta_step = {}",
        objective.name, params.max_depth, params.lambda, params.max_delta_step
    );
    let mut f_train = vec![objective.base; train.len()];
    let mut f_test = vec![objective.base; test.len()];
    let mut worst = 0f64;
    for round in 1..=rounds {
        let d = derivatives(&f_train, &train.targets, objective.loss);
        if let Some(closed_form) = objective.closed_form {
            for (i, (&f, &y)) in f_train.iter().zip(&train.targets).enumerate() {
                let (g, h) = closed_form(f, y);
                for (what, ours, exact) in [("g", d.grad[i], g), ("h", d.hess[i], h)] {
                    let err = (ours - exact).abs() / (1.0 + exact.abs());
                    assert!(
                        err <= 1e-12,
                        "{}: {what} of sample {i} is {ours}, the closed form {exact}",
                        objective.name
                    );
                    worst = worst.max(err);
                }
            }
        }
        let tree = grow(train, &d.grad, &d.hess, (0..train.len()).collect(), 0, params);
        if round == 1 {
            println!("the first tree (leaf weights before η):");
            tree.print(&train.features, 0);
        }
        for (f, data) in [(&mut f_train, train), (&mut f_test, test)] {
            for (i, f) in f.iter_mut().enumerate() {
                *f += eta * tree.predict(data.row(i));
            }
        }
        if round <= 3 || round % 5 == 0 || round == rounds {
            println!(
                "round {round:2}: train {} | test {}",
                (objective.report)(&f_train, train),
                (objective.report)(&f_test, test)
            );
        }
    }
    if objective.closed_form.is_some() {
        println!(
            "g and h matched their closed forms in every round (largest relative difference {worst:.1e})"
        );
    }
    f_test
}

/// The root mean squared error of the predictions `f`.
fn rmse(f: &[f64], data: &Data) -> f64 {
    let se: f64 = f.iter().zip(&data.targets).map(|(f, y)| (f - y).powi(2)).sum();
    (se / f.len() as f64).sqrt()
}

/// The RMSE of body masses `f`.
fn regression_report(f: &[f64], data: &Data) -> String {
    format!("RMSE {:5.1} g", rmse(f, data))
}

/// The fraction of rows whose logit has the label's sign.
fn accuracy(f: &[f64], data: &Data) -> f64 {
    let hits = f
        .iter()
        .zip(&data.targets)
        .filter(|(f, y)| (**f > 0.0) == (**y == 1.0))
        .count();
    hits as f64 / f.len() as f64
}

/// Accuracy and mean logistic loss of the logits `f`.
fn classification_report(f: &[f64], data: &Data) -> String {
    let n = f.len();
    let mean_loss = tapegrad::no_grad(|| {
        let (f, y) = (
            Tensor::from_vec(f.to_vec(), &[n]),
            Tensor::from_vec(data.targets.clone(), &[n]),
        );
        logistic(&f, &y).mean().item()
    });
    format!(
        "accuracy {:5.1}%, log loss {mean_loss:.4}",
        100.0 * accuracy(f, data)
    )
}

fn main() -> Result<(), Box<dyn Error>> {
    tapegrad::manual_seed(0);
    let short = short_mode();
    let rounds = if short { 3 } else { 30 };
    let eta = 0.3;
    // XGBoost's defaults, but for the depth (6 there).
    let params = TreeParams {
        max_depth: 3,
        lambda: 1.0,
        min_child_weight: 1.0,
        max_delta_step: f64::INFINITY,
    };

    let penguins = load_penguins()?;
    let (train, test) = penguins.split();
    println!(
        "penguins: {} with no missing value, {} to train on, {} held out",
        penguins.len(),
        train.len(),
        test.len()
    );
    let mean = train.targets.iter().sum::<f64>() / train.len() as f64;
    println!(
        "predicting the training mean {mean:.0} g: test {}",
        regression_report(&vec![mean; test.len()], &test)
    );
    let squared_run = Objective {
        name: "penguins' body mass, squared loss",
        loss: &squared,
        closed_form: Some(|f, y| (f - y, 1.0)),
        base: mean,
        report: regression_report,
    };
    let squared_rmse = rmse(&boost(&squared_run, &train, &test, &params, eta, rounds), &test);
    let huber = pseudo_huber(DELTA);
    let huber_run = Objective {
        name: "penguins' body mass, pseudo-Huber loss (δ = 300 g)",
        loss: &huber,
        closed_form: None,
        base: mean,
        report: regression_report,
    };
    // h = (1 + (r/δ)²)^(−3/2) is small for residuals r well above δ, where
    // the loss is nearly linear: there a Newton step −G/(H + λ) overshoots
    // by far, so the step is bounded.
    let bounded = TreeParams {
        max_delta_step: 2.0 * DELTA,
        ..params
    };
    let huber_rmse = rmse(&boost(&huber_run, &train, &test, &bounded, eta, rounds), &test);

    let cancer = load_breast_cancer()?;
    let (train, test) = cancer.split();
    let malignant = train.targets.iter().sum::<f64>() / train.len() as f64;
    println!(
        "breast cancer: {} samples, {} to train on, {} held out; {:.1}% of the training samples malignant",
        cancer.len(),
        train.len(),
        test.len(),
        100.0 * malignant
    );
    let logistic_run = Objective {
        name: "breast cancer, logistic loss",
        loss: &logistic,
        closed_form: Some(|f, y| {
            let p = 1.0 / (1.0 + (-f).exp());
            (p - y, p * (1.0 - p))
        }),
        // The log-odds of malignant in the training set.
        base: (malignant / (1.0 - malignant)).ln(),
        report: classification_report,
    };
    let test_accuracy = accuracy(&boost(&logistic_run, &train, &test, &params, eta, rounds), &test);

    if !short {
        for (loss, rmse) in [("squared", squared_rmse), ("pseudo-Huber", huber_rmse)] {
            assert!(
                rmse < 400.0,
                "{loss} loss: held-out RMSE {rmse:.1} g is above 400 g"
            );
        }
        assert!(
            test_accuracy >= 0.93,
            "held-out accuracy {test_accuracy} is below 93%"
        );
    }
    println!("test accuracy: {:.1}%", 100.0 * test_accuracy);
    Ok(())
}
