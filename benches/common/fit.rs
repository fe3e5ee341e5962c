//! The growth exponent of a measured size: the least-squares slope of
//! log(value) against log(n). Shared by the checkpoint bench and the
//! scaling test (which includes this file by path).

/// The slope of log(b) against log(n) over `points` of (n, b).
pub fn loglog_slope(points: &[(usize, usize)]) -> f64 {
    let logs: Vec<(f64, f64)> = points
        .iter()
        .map(|&(n, b)| ((n as f64).ln(), (b as f64).ln()))
        .collect();
    let k = logs.len() as f64;
    let (mx, my) = logs
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / k, b + y / k));
    let cov: f64 = logs.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = logs.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    cov / var
}
