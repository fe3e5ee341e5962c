//! Minibatches of row indices, for training loops (the index side of
//! PyTorch's `DataLoader`).
//!
//! [`Batches`] describes how an epoch is cut: `n` rows, a batch size,
//! whether the order is shuffled and whether a last, smaller batch is kept.
//! Each call to [`Batches::epoch`] (or each `for` over `&batches`) yields
//! the batches of one epoch as `Vec<usize>` of row indices; a shuffled
//! epoch draws a fresh [`randperm`] from the crate's
//! generator, so [`manual_seed`](crate::manual_seed) reproduces it. The
//! rows themselves are taken with [`Tensor::index_select`](crate::Tensor::index_select)
//! and the labels by indexing:
//!
//! ```
//! use tapegrad::data::Batches;
//! use tapegrad::Tensor;
//!
//! tapegrad::manual_seed(0);
//! let x = Tensor::<f32>::randn(&[10, 3]); // 10 rows of 3 features
//! let labels: Vec<usize> = (0..10).map(|i| i % 2).collect();
//! let batches = Batches::new(10, 4).shuffle(true);
//! for _epoch in 0..2 {
//!     for idx in &batches {
//!         let xb = x.index_select(0, &idx);
//!         let yb: Vec<usize> = idx.iter().map(|&i| labels[i]).collect();
//!         assert_eq!(xb.shape(), &[idx.len(), 3]);
//!         assert_eq!(yb.len(), idx.len());
//!     }
//! }
//! ```

use crate::randperm;

/// How an epoch of `n` rows is cut into batches of `batch_size` row
/// indices: in order by default, shuffled with [`shuffle`](Batches::shuffle),
/// and with the last, smaller batch kept unless
/// [`drop_last`](Batches::drop_last) (PyTorch's `DataLoader` defaults).
///
/// ```
/// use tapegrad::data::Batches;
///
/// let batches = Batches::new(5, 2);
/// let epoch: Vec<Vec<usize>> = batches.epoch().collect();
/// assert_eq!(epoch, vec![vec![0, 1], vec![2, 3], vec![4]]);
/// assert_eq!(batches.len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batches {
    n: usize,
    batch_size: usize,
    shuffle: bool,
    drop_last: bool,
}

impl Batches {
    /// Batches of `batch_size` indices from `0..n`, in order, the last one
    /// kept even if smaller.
    ///
    /// ```
    /// let batches = tapegrad::data::Batches::new(100, 32);
    /// assert_eq!(batches.epoch().map(|b| b.len()).collect::<Vec<_>>(), vec![32, 32, 32, 4]);
    /// ```
    ///
    /// **Panics** if `batch_size` is 0.
    #[track_caller]
    pub fn new(n: usize, batch_size: usize) -> Self {
        assert!(
            batch_size > 0,
            "Batches::new: batch_size must be positive (n = {n})"
        );
        Batches {
            n,
            batch_size,
            shuffle: false,
            drop_last: false,
        }
    }

    /// Whether each epoch visits the rows in a fresh random order, drawn with
    /// [`randperm`] when the epoch starts.
    ///
    /// ```
    /// use tapegrad::data::Batches;
    ///
    /// let batches = Batches::new(6, 6).shuffle(true);
    /// tapegrad::manual_seed(1);
    /// let first: Vec<Vec<usize>> = batches.epoch().collect();
    /// tapegrad::manual_seed(1);
    /// assert_eq!(batches.epoch().collect::<Vec<_>>(), first); // the seed reproduces it
    /// let mut rows = first[0].clone();
    /// rows.sort();
    /// assert_eq!(rows, vec![0, 1, 2, 3, 4, 5]);
    /// ```
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Whether the last batch is dropped when it is smaller than
    /// `batch_size` (its rows are then not visited in that epoch; with
    /// shuffling, other rows are left out each epoch).
    ///
    /// ```
    /// use tapegrad::data::Batches;
    ///
    /// let batches = Batches::new(5, 2).drop_last(true);
    /// assert_eq!(batches.epoch().collect::<Vec<_>>(), vec![vec![0, 1], vec![2, 3]]);
    /// assert_eq!(batches.len(), 2);
    /// ```
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// The number of batches in an epoch.
    ///
    /// ```
    /// use tapegrad::data::Batches;
    /// assert_eq!(Batches::new(10, 3).len(), 4);
    /// assert_eq!(Batches::new(10, 3).drop_last(true).len(), 3);
    /// ```
    pub fn len(&self) -> usize {
        if self.drop_last {
            self.n / self.batch_size
        } else {
            self.n.div_ceil(self.batch_size)
        }
    }

    /// Whether an epoch has no batch (no rows, or fewer than `batch_size`
    /// with [`drop_last`](Batches::drop_last)).
    ///
    /// ```
    /// use tapegrad::data::Batches;
    /// assert!(Batches::new(0, 4).is_empty());
    /// assert!(Batches::new(3, 4).drop_last(true).is_empty());
    /// assert!(!Batches::new(3, 4).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batches of one epoch; the shuffled order (if any) is drawn now.
    ///
    /// ```
    /// use tapegrad::data::Batches;
    ///
    /// let batches = Batches::new(4, 3);
    /// let mut epoch = batches.epoch();
    /// assert_eq!(epoch.len(), 2);
    /// assert_eq!(epoch.next(), Some(vec![0, 1, 2]));
    /// assert_eq!(epoch.next(), Some(vec![3]));
    /// assert_eq!(epoch.next(), None);
    /// ```
    pub fn epoch(&self) -> Epoch {
        let order = if self.shuffle {
            randperm(self.n)
        } else {
            (0..self.n).collect()
        };
        Epoch {
            order,
            batch_size: self.batch_size,
            next: 0,
            batches_left: self.len(),
        }
    }
}

/// `for idx in &batches` runs one epoch: [`Batches::epoch`].
///
/// ```
/// let batches = tapegrad::data::Batches::new(7, 4);
/// let mut seen = 0;
/// for idx in &batches {
///     seen += idx.len();
/// }
/// assert_eq!(seen, 7);
/// ```
impl IntoIterator for &Batches {
    type Item = Vec<usize>;
    type IntoIter = Epoch;

    fn into_iter(self) -> Epoch {
        self.epoch()
    }
}

/// The batches of one epoch, each a `Vec<usize>` of row indices; made by
/// [`Batches::epoch`].
///
/// ```
/// let mut epoch = tapegrad::data::Batches::new(3, 2).epoch();
/// assert_eq!(epoch.size_hint(), (2, Some(2)));
/// assert_eq!(epoch.next().unwrap().len(), 2);
/// assert_eq!(epoch.len(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct Epoch {
    order: Vec<usize>,
    batch_size: usize,
    next: usize,
    batches_left: usize,
}

impl Iterator for Epoch {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        if self.batches_left == 0 {
            return None;
        }
        self.batches_left -= 1;
        let end = (self.next + self.batch_size).min(self.order.len());
        let batch = self.order[self.next..end].to_vec();
        self.next = end;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.batches_left, Some(self.batches_left))
    }
}

impl ExactSizeIterator for Epoch {}
