//! `data::Batches`: every row once per epoch, the last batch kept or
//! dropped, shuffling reproduced by the seed and fresh each epoch.

use tapegrad::data::Batches;

/// The batches of one epoch, flattened and sorted.
fn rows_visited(batches: &Batches) -> Vec<usize> {
    let mut rows: Vec<usize> = batches.epoch().flatten().collect();
    rows.sort_unstable();
    rows
}

#[test]
fn every_row_exactly_once_per_epoch() {
    tapegrad::manual_seed(0);
    for (n, batch_size) in [(10, 3), (12, 4), (1, 5), (64, 64), (100, 7)] {
        for shuffle in [false, true] {
            let batches = Batches::new(n, batch_size).shuffle(shuffle);
            for _epoch in 0..3 {
                assert_eq!(
                    rows_visited(&batches),
                    (0..n).collect::<Vec<_>>(),
                    "n {n} batch {batch_size}"
                );
            }
        }
    }
}

#[test]
fn batch_sizes_keep_or_drop_the_last_partial_batch() {
    for shuffle in [false, true] {
        let kept: Vec<usize> = Batches::new(10, 4)
            .shuffle(shuffle)
            .epoch()
            .map(|b| b.len())
            .collect();
        assert_eq!(kept, [4, 4, 2]);
        let dropped = Batches::new(10, 4).shuffle(shuffle).drop_last(true);
        let sizes: Vec<usize> = dropped.epoch().map(|b| b.len()).collect();
        assert_eq!(sizes, [4, 4]);
        assert_eq!(dropped.len(), 2);
        // the dropped rows are distinct, and the rest is every other row once
        let mut rows: Vec<usize> = dropped.epoch().flatten().collect();
        rows.sort_unstable();
        rows.dedup();
        assert_eq!(rows.len(), 8);
    }
    // an exact multiple loses nothing to drop_last
    let exact = Batches::new(12, 4).drop_last(true);
    assert_eq!(rows_visited(&exact), (0..12).collect::<Vec<_>>());
    assert_eq!(exact.epoch().len(), 3);
}

#[test]
fn unshuffled_batches_are_in_order() {
    let epoch: Vec<Vec<usize>> = (&Batches::new(5, 2)).into_iter().collect();
    assert_eq!(epoch, [vec![0, 1], vec![2, 3], vec![4]]);
}

#[test]
fn shuffling_is_reproduced_by_the_seed_and_fresh_each_epoch() {
    let batches = Batches::new(50, 8).shuffle(true);
    tapegrad::manual_seed(42);
    let first: Vec<Vec<usize>> = batches.epoch().collect();
    let second: Vec<Vec<usize>> = batches.epoch().collect();
    tapegrad::manual_seed(42);
    assert_eq!(batches.epoch().collect::<Vec<_>>(), first);
    assert_eq!(batches.epoch().collect::<Vec<_>>(), second);
    assert_ne!(first, second, "two epochs drew the same order");
    let in_order: Vec<usize> = first.concat();
    assert_ne!(
        in_order,
        (0..50).collect::<Vec<_>>(),
        "the shuffled epoch is in order"
    );
}

#[test]
fn the_iterator_reports_its_length() {
    let mut epoch = Batches::new(9, 2).epoch();
    assert_eq!(epoch.len(), 5);
    epoch.next();
    assert_eq!(epoch.size_hint(), (4, Some(4)));
    assert_eq!(epoch.by_ref().count(), 4);
    assert_eq!(epoch.next(), None);
}

#[test]
fn empty_data_gives_no_batch() {
    assert_eq!(Batches::new(0, 3).epoch().count(), 0);
    assert_eq!(Batches::new(2, 3).drop_last(true).epoch().count(), 0);
}

#[test]
#[should_panic(expected = "Batches::new: batch_size must be positive")]
fn zero_batch_size_panics() {
    let _ = Batches::new(4, 0);
}
