//! The planner's dynamic programme: pure arithmetic over measured layer
//! profiles (no tensors), choosing which layers to checkpoint.
//!
//! The model, layer by layer (`E`: what a layer saves apart from its input,
//! `X`: its input's bytes):
//! - a plain layer keeps `E`, plus `X` if it saves its input and the
//!   previous layer is not a plain layer that saved that buffer already (as
//!   its output);
//! - a checkpointed segment keeps its input `X` (unless the previous plain
//!   layer saved it already) and nothing else;
//! - backward frees from the end: plain layers after a segment are gone by
//!   the time the segment re-runs, and the re-run holds all the segment's
//!   saves at once. So the peak is the larger of the kept total at the end
//!   of forward and, for each checkpointed segment, what is kept before it
//!   plus its input plus its re-run's saves.

use super::planner::{LayerProfile, Segment};

/// The saved-bytes model over measured layers.
pub(super) struct Model<'a> {
    pub(super) p: &'a [LayerProfile],
}

impl Model<'_> {
    /// What plain layer `i` adds; `credit`: the previous layer is plain and
    /// saved its output (this layer's input).
    fn plain(&self, i: usize, credit: bool) -> usize {
        let p = &self.p[i];
        p.saved_bytes
            + if p.saves_input && !credit {
                p.input_bytes
            } else {
                0
            }
    }

    /// What a checkpointed segment starting at `i` keeps.
    fn ckpt(&self, i: usize, credit: bool) -> usize {
        if credit {
            0
        } else {
            self.p[i].input_bytes
        }
    }

    /// What layer `l` adds inside a re-run of a segment starting at `start`
    /// (whose input the checkpoint holds already).
    fn in_rerun(&self, start: usize, l: usize) -> usize {
        if l == start {
            self.p[l].saved_bytes
        } else {
            self.plain(l, self.p[l - 1].saves_output)
        }
    }

    /// Fills in the segments' bytes and returns (forward, peak).
    pub(super) fn simulate(&self, segments: &mut [Segment]) -> (usize, usize) {
        let (mut keep, mut peak, mut credit) = (0usize, 0usize, false);
        for s in segments.iter_mut() {
            if s.checkpointed {
                s.kept_bytes = self.ckpt(s.start, credit);
                s.rerun_bytes = (s.start..s.end).map(|l| self.in_rerun(s.start, l)).sum();
                peak = peak.max(keep + s.kept_bytes + s.rerun_bytes);
                credit = false;
            } else {
                s.kept_bytes = 0;
                s.rerun_bytes = 0;
                for l in s.start..s.end {
                    s.kept_bytes += self.plain(l, credit);
                    credit = self.p[l].saves_output;
                }
            }
            keep += s.kept_bytes;
        }
        (keep, peak.max(keep))
    }

    /// Whether some plan has every constraint under `budget` (feasibility
    /// only, no cost).
    pub(super) fn feasible(&self, budget: usize) -> bool {
        let n = self.p.len();
        // best[i][credit]: the smallest keep after the first i layers.
        let mut best = vec![[usize::MAX; 2]; n + 1];
        best[0][0] = 0;
        for i in 0..n {
            for c in 0..2 {
                let m = best[i][c];
                if m == usize::MAX {
                    continue;
                }
                let plain = m + self.plain(i, c == 1);
                if plain <= budget {
                    let nc = self.p[i].saves_output as usize;
                    best[i + 1][nc] = best[i + 1][nc].min(plain);
                }
                let base = m + self.ckpt(i, c == 1);
                let mut rerun = 0;
                for (j, after) in best.iter_mut().enumerate().skip(i + 1) {
                    rerun += self.in_rerun(i, j - 1);
                    if base + rerun > budget {
                        break;
                    }
                    after[0] = after[0].min(base);
                }
            }
        }
        best[n].iter().any(|&m| m <= budget)
    }

    /// The smallest budget some plan fits in.
    pub(super) fn minimum(&self) -> usize {
        let mut all_plain = vec![Segment {
            start: 0,
            end: self.p.len(),
            checkpointed: false,
            kept_bytes: 0,
            rerun_bytes: 0,
        }];
        let (mut lo, mut hi) = (0, self.simulate(&mut all_plain).1);
        // Invariant: hi is feasible; lo - 1 is not (or lo == 0).
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.feasible(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        hi
    }

    /// The plan recomputing the least cost under `budget` (assumed
    /// feasible), as segments.
    pub(super) fn best(&self, budget: usize) -> Vec<Segment> {
        let n = self.p.len();
        // Costs in integer units: about 4n units in all, at least 1 each,
        // so that a checkpoint never looks free.
        let total: f64 = self.p.iter().map(|p| p.cost_secs.max(0.0)).sum();
        let unit = if total > 0.0 {
            total / (4 * n.max(1)) as f64
        } else {
            1.0
        };
        let units: Vec<usize> = self
            .p
            .iter()
            .map(|p| ((p.cost_secs.max(0.0) / unit).round() as usize).max(1))
            .collect();
        let k_max: usize = units.iter().sum();
        let width = k_max + 1;
        let at = |i: usize, c: usize, k: usize| (i * 2 + c) * width + k;
        // keep[i, credit, k]: the smallest keep after the first i layers
        // having recomputed k units; from: how it was reached.
        let mut keep = vec![usize::MAX; (n + 1) * 2 * width];
        let mut from: Vec<(usize, usize, usize, bool)> = vec![(0, 0, 0, false); keep.len()];
        keep[at(0, 0, 0)] = 0;
        for i in 0..n {
            for c in 0..2 {
                for k in 0..width {
                    let m = keep[at(i, c, k)];
                    if m == usize::MAX {
                        continue;
                    }
                    let plain = m + self.plain(i, c == 1);
                    if plain <= budget {
                        let to = at(i + 1, self.p[i].saves_output as usize, k);
                        if plain < keep[to] {
                            keep[to] = plain;
                            from[to] = (i, c, k, false);
                        }
                    }
                    let base = m + self.ckpt(i, c == 1);
                    let (mut rerun, mut cost) = (0, 0);
                    for j in i + 1..=n {
                        rerun += self.in_rerun(i, j - 1);
                        cost += units[j - 1];
                        if base + rerun > budget {
                            break;
                        }
                        let to = at(j, 0, k + cost);
                        if base < keep[to] {
                            keep[to] = base;
                            from[to] = (i, c, k, true);
                        }
                    }
                }
            }
        }
        let (mut c, mut k) = (0..width)
            .flat_map(|k| (0..2).map(move |c| (c, k)))
            .filter(|&(c, k)| keep[at(n, c, k)] <= budget)
            .min_by_key(|&(c, k)| (k, keep[at(n, c, k)]))
            .expect("the budget is feasible");
        let mut segments = Vec::new();
        let mut j = n;
        while j > 0 {
            let (i, pc, pk, checkpointed) = from[at(j, c, k)];
            segments.push(Segment {
                start: i,
                end: j,
                checkpointed,
                kept_bytes: 0,
                rerun_bytes: 0,
            });
            (j, c, k) = (i, pc, pk);
        }
        segments.reverse();
        // Consecutive plain layers make one plain segment.
        let mut merged: Vec<Segment> = Vec::new();
        for s in segments {
            match merged.last_mut() {
                Some(last) if !last.checkpointed && !s.checkpointed => last.end = s.end,
                _ => merged.push(s),
            }
        }
        merged
    }
}
