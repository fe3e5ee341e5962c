//! A character-level transformer language model on *Alice's Adventures in
//! Wonderland* (`examples/data/alice29.txt.gz`, public domain): token
//! embeddings and sinusoidal positions, causal pre-norm [`TransformerBlock`]s, a linear head
//! over the characters. Training sequences of random lengths are packed
//! back to back into batches of up to 2048 tokens ([`pack_sequences`]), with
//! no padding: attention runs per sequence ([`varlen_attention`]'s tiled
//! kernel). Samples are printed as it trains; the validation loss (the last
//! tenth of the book, nats per character) goes below 1.55 within 2,000
//! steps (1.508 in the run in `docs/attention.md`). The trained weights are saved as
//! safetensors (`target/char_lm.safetensors`), loaded into a fresh model
//! and checked to give the same validation loss.
//!
//! Run: `cargo run --release --example char_lm [-- --checkpoint]`
//! (`--checkpoint` recomputes each block in backward instead of keeping its
//! activations: less memory, the same numbers; `TAPEGRAD_EXAMPLE_SHORT=1`
//! trains a few steps only, for CI).
//!
//! [`varlen_attention`]: tapegrad::nn::functional::varlen_attention

mod common;

use common::{output_path, short_mode};
use flate2::read::GzDecoder;
use indicatif::{ProgressBar, ProgressStyle};
use std::error::Error;
use std::io::Read;
use tapegrad::nn::functional::{pack_sequences, PackedBatch};
use tapegrad::nn::{clip_grad_norm, load_safetensors, save_safetensors};
use tapegrad::nn::{Embedding, LayerNorm, Linear, Module, TransformerBlock};
use tapegrad::optim::{AdamW, CosineAnnealingLr, Optimizer};
use tapegrad::{checkpoint, memory, no_grad, Tensor};

/// The longest sequence the model reads (its positions).
const CONTEXT: usize = 128;
/// Training sequences are this long at least.
const MIN_LEN: usize = 32;
/// Tokens in one packed batch, at most.
const BUDGET: usize = 2048;

/// The book from its first chapter to "THE END", with Unix line ends.
fn load_text() -> Result<String, Box<dyn Error>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/alice29.txt.gz");
    let mut text = String::new();
    GzDecoder::new(std::fs::File::open(path)?).read_to_string(&mut text)?;
    let text = text.replace("\r\n", "\n");
    let start = text.find("CHAPTER I").ok_or("no CHAPTER I in the text")?;
    let end = text.rfind("THE END").ok_or("no THE END in the text")? + "THE END".len();
    Ok(text[start..end].to_string())
}

/// The characters of a text and their ids.
struct Vocab {
    chars: Vec<char>,
}

impl Vocab {
    fn new(text: &str) -> Vocab {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Vocab { chars }
    }

    fn encode(&self, text: &str) -> Vec<usize> {
        text.chars()
            .map(|c| self.chars.binary_search(&c).expect("a character of the text"))
            .collect()
    }

    fn decode(&self, ids: &[usize]) -> String {
        ids.iter().map(|&i| self.chars[i]).collect()
    }
}

/// The model: `tok_emb`, `blocks.0..`, `ln_f`, `head`, and fixed
/// sinusoidal position vectors (not trained).
#[derive(Clone)]
struct CharLm {
    tok_emb: Embedding,
    /// `[CONTEXT, dim]`: row `p` holds `sin(p ω_i)` and `cos(p ω_i)` with
    /// `ω_i = 10000^(-2i/dim)` ("Attention Is All You Need", 3.5).
    positions: Tensor<f32>,
    blocks: Vec<TransformerBlock>,
    ln_f: LayerNorm,
    head: Linear,
    checkpointed: bool,
}

impl CharLm {
    /// Fixed position vectors rather than an `Embedding` of positions,
    /// which trains the vector of position `p` only on windows longer than
    /// `p`: the validation loss after 2,000 steps was 1.595 with learned
    /// positions, 1.535 with these.
    fn new(vocab: usize, dim: usize, heads: usize, layers: usize) -> CharLm {
        let table = (0..CONTEXT * dim)
            .map(|k| {
                let (p, i) = (k / dim, k % dim);
                let angle = p as f32 * 10000f32.powf(-((i / 2 * 2) as f32) / dim as f32);
                if i % 2 == 0 {
                    angle.sin()
                } else {
                    angle.cos()
                }
            })
            .collect();
        CharLm {
            tok_emb: Embedding::new(vocab, dim),
            positions: Tensor::from_vec(table, &[CONTEXT, dim]),
            blocks: (0..layers)
                .map(|_| TransformerBlock::new(dim, heads, 4 * dim).causal(true))
                .collect(),
            ln_f: LayerNorm::new(&[dim]),
            head: Linear::new(dim, vocab),
            checkpointed: false,
        }
    }

    /// The logits `[tokens, vocab]` of the next character after each token
    /// of the sequences packed in `batch` (`ids` their characters, back to
    /// back). With `checkpointed`, each block keeps only its input for
    /// backward and runs again then.
    fn logits(&self, ids: &[usize], batch: &PackedBatch) -> Tensor<f32> {
        let mut h = self.tok_emb.lookup(ids) + self.positions.index_select(0, &batch.positions());
        for block in &self.blocks {
            h = match self.checkpointed {
                true => {
                    let (block, cu) = (block.clone(), batch.cu_seqlens.clone());
                    checkpoint(move |x| block.forward_packed(&x[0], &cu), &[h])
                }
                false => block.forward_packed(&h, &batch.cu_seqlens),
            };
        }
        self.head.forward(&self.ln_f.forward(&h))
    }
}

impl Module<f32> for CharLm {
    /// The logits of one sequence, its ids given as the values of `x`.
    fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
        let ids: Vec<usize> = x.to_vec().iter().map(|&v| v as usize).collect();
        let batch = PackedBatch {
            sequences: vec![0],
            cu_seqlens: vec![0, ids.len()],
        };
        self.logits(&ids, &batch)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor<f32>)> {
        let prefixed = |prefix: String, m: &dyn Module<f32>| {
            let params = m.named_parameters().into_iter();
            params.map(move |(n, t)| (format!("{prefix}.{n}"), t))
        };
        let mut params: Vec<(String, Tensor<f32>)> = prefixed("tok_emb".into(), &self.tok_emb).collect();
        for (i, block) in self.blocks.iter().enumerate() {
            params.extend(prefixed(format!("blocks.{i}"), block));
        }
        params.extend(prefixed("ln_f".into(), &self.ln_f));
        params.extend(prefixed("head".into(), &self.head));
        params
    }
}

/// `n` draws from the crate's generator, uniform in `0..bound`.
fn randint(n: usize, bound: usize) -> Vec<usize> {
    Tensor::<f64>::rand(&[n])
        .to_vec()
        .iter()
        .map(|u| ((u * bound as f64) as usize).min(bound - 1))
        .collect()
}

/// Windows of `data` packed into batches of at most `BUDGET` tokens: for
/// each batch the input ids and the target ids (the next character of
/// each), back to back. The windows start anywhere; half are `CONTEXT`
/// long, the others from `MIN_LEN` to `CONTEXT` (drawn uniformly). With
/// all lengths uniform, the last positions were trained by few windows and
/// predicted poorly (validation loss 1.87 on positions 112 and on, 1.44
/// before), and samples fell apart once they filled the context.
fn training_batches(data: &[usize], windows: usize) -> Vec<(PackedBatch, Vec<usize>, Vec<usize>)> {
    let lengths: Vec<usize> = randint(windows, 2 * (CONTEXT - MIN_LEN + 1))
        .into_iter()
        .map(|n| (n + MIN_LEN).min(CONTEXT))
        .collect();
    let starts = randint(windows, data.len() - CONTEXT - 1);
    let seqs: Vec<(usize, usize)> = starts.into_iter().zip(lengths.iter().copied()).collect();
    with_targets(data, &seqs, &pack_sequences(&lengths, BUDGET))
}

/// Each batch's inputs and targets from `data`, sequence `i` of the
/// batches being `data[seqs[i].0..][..seqs[i].1]`.
fn with_targets(
    data: &[usize],
    seqs: &[(usize, usize)],
    batches: &[PackedBatch],
) -> Vec<(PackedBatch, Vec<usize>, Vec<usize>)> {
    batches
        .iter()
        .map(|b| {
            let window = |shift: usize| {
                b.sequences
                    .iter()
                    .flat_map(|&i| data[seqs[i].0 + shift..][..seqs[i].1].iter().copied())
                    .collect()
            };
            (b.clone(), window(0), window(1))
        })
        .collect()
}

/// The mean loss (nats per character) over `batches`, without a graph.
fn evaluate(model: &CharLm, batches: &[(PackedBatch, Vec<usize>, Vec<usize>)]) -> f32 {
    let (mut total, mut count) = (0.0, 0);
    for (batch, x, y) in batches {
        let loss = no_grad(|| model.logits(x, batch).cross_entropy(y)).item();
        total += loss * y.len() as f32;
        count += y.len();
    }
    total / count as f32
}

/// `n` characters generated after `prompt`, each drawn from the model's
/// distribution (at temperature 0.8) given the last `CONTEXT` characters.
fn sample(model: &CharLm, vocab: &Vocab, prompt: &str, n: usize) -> String {
    let mut ids = vocab.encode(prompt);
    let draws = Tensor::<f64>::rand(&[n]).to_vec();
    for u in draws {
        let context = &ids[ids.len().saturating_sub(CONTEXT)..];
        let x = Tensor::from_vec(context.iter().map(|&i| i as f32).collect(), &[context.len()]);
        let logits = no_grad(|| model.forward(&x));
        let last = logits.narrow(0, context.len() - 1, 1) * (1.0 / 0.8);
        let probs = last.softmax(1).to_vec();
        let mut acc = 0.0;
        let next = probs
            .iter()
            .position(|&p| {
                acc += p as f64;
                acc > u
            })
            .unwrap_or(probs.len() - 1);
        ids.push(next);
    }
    vocab.decode(&ids)
}

/// Bytes the graph of one training step keeps for backward, at the end of
/// the forward.
fn saved_by_a_step(model: &CharLm, (batch, x, y): &(PackedBatch, Vec<usize>, Vec<usize>)) -> usize {
    let before = memory::saved_bytes();
    let loss = model.logits(x, batch).cross_entropy(y);
    let saved = memory::saved_bytes() - before;
    drop(loss);
    saved
}

fn main() -> Result<(), Box<dyn Error>> {
    tapegrad::manual_seed(0);
    let short = short_mode();
    let checkpointed = std::env::args().any(|a| a == "--checkpoint");
    let text = load_text()?;
    let vocab = Vocab::new(&text);
    let data = vocab.encode(&text);
    let split = data.len() * 9 / 10;
    let (train, val) = (&data[..split], &data[split..]);
    println!(
        "{} characters ({} distinct): {} to train on, {} to validate",
        data.len(),
        vocab.chars.len(),
        train.len(),
        val.len()
    );

    // Validation: the held-out text in consecutive windows of CONTEXT.
    let val_seqs: Vec<(usize, usize)> = (0..(val.len() - 1) / CONTEXT)
        .map(|i| (i * CONTEXT, CONTEXT))
        .collect();
    let val_lengths: Vec<usize> = val_seqs.iter().map(|s| s.1).collect();
    let mut val_batches = with_targets(val, &val_seqs, &pack_sequences(&val_lengths, BUDGET));
    if short {
        val_batches.truncate(1);
    }

    let mut model = CharLm::new(vocab.chars.len(), 64, 4, 4);
    model.checkpointed = checkpointed;
    let n_params: usize = model.parameters().iter().map(Tensor::numel).sum();
    let (steps, eval_every, sample_len) = if short { (6, 3, 40) } else { (2000, 250, 200) };
    println!(
        "model: {n_params} parameters, 4 blocks of dim 64 (4 heads), context {CONTEXT}; \
         {steps} steps of packed batches of up to {BUDGET} tokens{}",
        if checkpointed { ", checkpointed blocks" } else { "" }
    );

    let mut opt = AdamW::new(model.parameters(), 3e-3).weight_decay(0.01);
    let mut schedule = CosineAnnealingLr::new(&opt, steps, 1e-4);
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} step {pos}/{len} {msg} [{elapsed_precise}]",
    )?);
    let (mut step, mut packed_tokens, mut padded_tokens) = (0, 0, 0);
    let mut val_loss = f32::NAN;
    while step < steps {
        for item in training_batches(train, 64) {
            if step == steps {
                break;
            }
            if step == 0 {
                let saved = saved_by_a_step(&model, &item);
                let mib = saved as f64 / (1 << 20) as f64;
                bar.suspend(|| println!("one step's graph keeps {mib:.1} MiB for backward"));
            }
            let (batch, x, y) = &item;
            packed_tokens += batch.tokens();
            let longest = batch
                .cu_seqlens
                .windows(2)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap_or(0);
            padded_tokens += longest * batch.sequences.len();
            opt.zero_grad();
            let loss = model.logits(x, batch).cross_entropy(y);
            loss.backward();
            clip_grad_norm(&model.parameters(), 1.0);
            opt.step();
            schedule.step(&mut opt);
            step += 1;
            bar.set_message(format!("loss {:.3}", loss.item()));
            bar.inc(1);
            if step % eval_every == 0 || step == steps {
                val_loss = evaluate(&model, &val_batches);
                let text = sample(&model, &vocab, "Alice ", sample_len);
                // Printed also when the bar is hidden (stderr not a terminal).
                let text = text.replace('\n', "\n    ");
                bar.suspend(|| println!("step {step}: validation loss {val_loss:.3}\n    {text}"));
            }
        }
    }
    bar.finish();
    println!(
        "packing: {packed_tokens} tokens trained on; padding each batch to its longest sequence \
         would have computed {padded_tokens} ({:.0}% more)",
        100.0 * (padded_tokens as f64 / packed_tokens as f64 - 1.0)
    );

    let path = output_path("char_lm.safetensors");
    save_safetensors(&model, &path)?;
    let reloaded = CharLm::new(vocab.chars.len(), 64, 4, 4);
    load_safetensors(&reloaded, &path)?;
    let again = evaluate(&reloaded, &val_batches);
    println!("saved {}; reloaded, validation loss {again:.3}", path.display());
    if again != val_loss {
        return Err(format!("the reloaded model's validation loss {again} is not {val_loss}").into());
    }
    Ok(())
}
