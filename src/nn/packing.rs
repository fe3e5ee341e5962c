//! Packing sequences of different lengths back to back, for
//! [`varlen_attention`](crate::nn::functional::varlen_attention): no pad
//! tokens, so no work and no memory spent on them.

use crate::{Float, Tensor};

/// Sequences packed back to back into one batch: which sequences (indices
/// into the list given to [`pack_sequences`]) and where each starts.
///
/// ```
/// use tapegrad::nn::functional::pack_sequences;
/// use tapegrad::Tensor;
///
/// let seqs: Vec<Tensor<f32>> = [3, 5, 2].iter().map(|&n| Tensor::ones(&[n, 4])).collect();
/// let batches = pack_sequences(&[3, 5, 2], 8);
/// assert_eq!(batches.len(), 2);
/// assert_eq!(batches[0].sequences, [0, 1]); // 5 + 3 tokens
/// assert_eq!(batches[0].cu_seqlens, [0, 3, 8]);
/// let packed = batches[0].pack(&seqs); // [8, 4]
/// let back = batches[0].unpack(&packed);
/// assert_eq!(back[1].shape(), &[5, 4]);
/// assert_eq!(batches[0].positions(), [0, 1, 2, 0, 1, 2, 3, 4]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedBatch {
    /// The packed sequences, in increasing order of their index.
    pub sequences: Vec<usize>,
    /// Where each starts and the last ends: sequence `sequences[i]` is the
    /// rows `cu_seqlens[i]..cu_seqlens[i + 1]` of the packed tensor.
    pub cu_seqlens: Vec<usize>,
}

/// Packs sequences of `lengths` tokens into batches of at most
/// `max_tokens` tokens each, as few as first-fit decreasing finds (each
/// sequence, longest first, goes into the first batch with room for it).
///
/// ```
/// use tapegrad::nn::functional::pack_sequences;
/// let lengths = [7, 2, 9, 4, 1, 6];
/// let batches = pack_sequences(&lengths, 10);
/// assert_eq!(batches.len(), 3); // 29 tokens, no pad: 10 + 10 + 9
/// assert!(batches.iter().all(|b| b.tokens() <= 10));
/// ```
///
/// **Panics** if a sequence is longer than `max_tokens`.
#[track_caller]
pub fn pack_sequences(lengths: &[usize], max_tokens: usize) -> Vec<PackedBatch> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    // (tokens so far, sequences) per batch
    let mut bins: Vec<(usize, Vec<usize>)> = Vec::new();
    for i in order {
        let n = lengths[i];
        assert!(
            n <= max_tokens,
            "pack_sequences: sequence {i} has {n} tokens, more than max_tokens = {max_tokens}"
        );
        match bins.iter_mut().find(|(used, _)| used + n <= max_tokens) {
            Some((used, seqs)) => {
                *used += n;
                seqs.push(i);
            }
            None => bins.push((n, vec![i])),
        }
    }
    bins.into_iter()
        .map(|(_, mut sequences)| {
            sequences.sort_unstable();
            let cu_seqlens = std::iter::once(0)
                .chain(sequences.iter().scan(0, |end, &i| {
                    *end += lengths[i];
                    Some(*end)
                }))
                .collect();
            PackedBatch {
                sequences,
                cu_seqlens,
            }
        })
        .collect()
}

impl PackedBatch {
    /// The number of tokens packed.
    #[track_caller]
    pub fn tokens(&self) -> usize {
        *self.cu_seqlens.last().expect("cu_seqlens starts with 0")
    }

    /// The batch's sequences (`seqs[i]` for each `i` in
    /// [`sequences`](PackedBatch::sequences), each `[n_i, ..]`) joined
    /// along dimension 0: `[tokens, ..]`. Differentiable (a `cat`).
    ///
    /// **Panics** if a sequence is missing from `seqs`, or its first
    /// dimension is not its length here, or their other dimensions differ.
    #[track_caller]
    pub fn pack<T: Float>(&self, seqs: &[Tensor<T>]) -> Tensor<T> {
        // A loop, not a closure: `#[track_caller]` does not reach into one.
        let mut parts = Vec::with_capacity(self.sequences.len());
        for (&i, w) in self.sequences.iter().zip(self.cu_seqlens.windows(2)) {
            let Some(seq) = seqs.get(i) else {
                panic!(
                    "PackedBatch::pack: sequence {i} is packed but only {} were given",
                    seqs.len()
                )
            };
            assert!(
                seq.shape().first() == Some(&(w[1] - w[0])),
                "PackedBatch::pack: sequence {i} has shape {:?}, but {} tokens were packed for it",
                seq.shape(),
                w[1] - w[0]
            );
            parts.push(seq.clone());
        }
        Tensor::cat(&parts, 0)
    }

    /// The rows of each sequence in `packed` (`[tokens, ..]`, as
    /// [`pack`](PackedBatch::pack) made it, or an output computed from it),
    /// in the order of [`sequences`](PackedBatch::sequences): views.
    ///
    /// **Panics** if `packed`'s first dimension is not the batch's tokens.
    #[track_caller]
    pub fn unpack<T: Float>(&self, packed: &Tensor<T>) -> Vec<Tensor<T>> {
        assert!(
            packed.shape().first() == Some(&self.tokens()),
            "PackedBatch::unpack: expects [{}, ..] (the packed tokens), got shape {:?}",
            self.tokens(),
            packed.shape()
        );
        self.cu_seqlens
            .windows(2)
            .map(|w| packed.narrow(0, w[0], w[1] - w[0]))
            .collect()
    }

    /// Each token's position within its own sequence (from 0 at each
    /// start): the ids of a positional embedding.
    #[track_caller]
    pub fn positions(&self) -> Vec<usize> {
        self.cu_seqlens.windows(2).flat_map(|w| 0..w[1] - w[0]).collect()
    }
}
