//! From devices to people, with an interval: `estimate = rate × devices`, and
//! `low`/`high` = `estimate + q × √(estimate + 1)` with `q` two quantiles of the scaled
//! residuals of hand-counted windows, widened to whole people (`low` down, `high` up). The
//! rate absorbs what linking cannot (phones split into a few clusters, laptops beside phones,
//! silent phones); the square root lets the interval widen with the crowd, as counting errors
//! do. People come in whole numbers: an estimate of 0.4 cannot rule out the one person who sat
//! silent, and an interval of 0–0.6 would claim it does.

/// The fitted model: what `probegate calibrate` writes into a plugin's config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Model {
    /// People per counted device.
    pub rate: f64,
    /// Quantiles of `(truth − estimate) / √(estimate + 1)`: the interval's edges.
    pub q_low: f64,
    pub q_high: f64,
}

impl Default for Model {
    /// `probegate calibrate` on the seven shared Fryza days (README.md): the shipped defaults.
    fn default() -> Self {
        Model {
            rate: 0.531,
            q_low: -0.472,
            q_high: 1.0,
        }
    }
}

/// One window's estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

impl Model {
    pub fn estimate(&self, devices: u32) -> Estimate {
        let estimate = self.rate * f64::from(devices);
        let spread = (estimate + 1.0).sqrt();
        // The interval always holds the estimate; the tolerance keeps an edge that lands on
        // a whole number from moving by floating-point noise.
        let low = (estimate + self.q_low * spread).min(estimate);
        let high = (estimate + self.q_high * spread).max(estimate);
        Estimate {
            estimate,
            low: (low + 1e-9).floor().max(0.0),
            high: (high - 1e-9).ceil().max(0.0),
        }
    }

    /// Fits the rate and the interval to `(devices, people counted by hand)` per window. The
    /// rate is the median of people per device, each window weighted by its devices (robust
    /// to a few odd windows; empty windows say nothing about it); the interval holds the
    /// central `coverage` of the scaled residuals. `None` without a window that has devices.
    pub fn fit(windows: &[(u32, f64)], coverage: f64) -> Option<Model> {
        let ratios: Vec<(f64, f64)> = windows
            .iter()
            .filter(|(d, _)| *d > 0)
            .map(|&(d, truth)| (truth / f64::from(d), f64::from(d)))
            .collect();
        let rate = weighted_median(&ratios)?;
        let residuals: Vec<f64> = windows
            .iter()
            .map(|&(d, truth)| {
                let e = rate * f64::from(d);
                (truth - e) / (e + 1.0).sqrt()
            })
            .collect();
        let tail = (1.0 - coverage.clamp(0.0, 1.0)) / 2.0;
        Some(Model {
            rate,
            q_low: quantile(&residuals, tail)?,
            q_high: quantile(&residuals, 1.0 - tail)?,
        })
    }
}

/// The value below which half of the total weight lies; `None` for no positive weight.
pub fn weighted_median(values: &[(f64, f64)]) -> Option<f64> {
    let mut v: Vec<(f64, f64)> = values
        .iter()
        .copied()
        .filter(|(x, w)| x.is_finite() && *w > 0.0)
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = v.iter().map(|p| p.1).sum();
    let mut acc = 0.0;
    for (x, w) in &v {
        acc += w;
        if acc >= total / 2.0 {
            return Some(*x);
        }
    }
    None
}

/// The `p` quantile of weighted values: the smallest value with at least `p` of the total
/// weight at or below it. `None` for no positive weight.
pub fn weighted_quantile(values: &[(f64, f64)], p: f64) -> Option<f64> {
    let mut v: Vec<(f64, f64)> = values
        .iter()
        .copied()
        .filter(|(x, w)| x.is_finite() && *w > 0.0)
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = v.iter().map(|x| x.1).sum();
    let target = p.clamp(0.0, 1.0) * total;
    let mut acc = 0.0;
    for (x, w) in &v {
        acc += w;
        if acc >= target - 1e-12 {
            return Some(*x);
        }
    }
    v.last().map(|x| x.0)
}

/// The `p` quantile by linear interpolation between order statistics.
pub fn quantile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let pos = p.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_the_device_weighted_median_of_people_per_device() {
        // Two devices per person in most windows; one odd window does not move the median.
        let windows = [(20, 10.0), (30, 15.0), (10, 5.0), (4, 40.0), (0, 0.0)];
        let m = Model::fit(&windows, 0.9).unwrap();
        assert!((m.rate - 0.5).abs() < 1e-9, "{m:?}");
        assert!(m.q_low <= 0.0 && m.q_high > 0.0, "{m:?}");
    }

    #[test]
    fn nothing_to_fit_without_devices() {
        assert_eq!(Model::fit(&[(0, 3.0)], 0.9), None);
    }

    #[test]
    fn the_interval_widens_with_the_estimate_and_never_goes_below_zero() {
        let m = Model {
            rate: 0.5,
            q_low: -1.0,
            q_high: 2.0,
        };
        let e = m.estimate(30);
        assert_eq!(e.estimate, 15.0);
        assert_eq!((e.low, e.high), (11.0, 23.0));
        let none = m.estimate(0);
        assert_eq!((none.estimate, none.low, none.high), (0.0, 0.0, 2.0));
    }

    #[test]
    fn the_interval_is_whole_people_and_holds_the_estimate() {
        let m = Model {
            rate: 0.55,
            q_low: -0.3,
            q_high: 0.4,
        };
        // 3 devices: 1.65, widened from 1.16–2.31 to 1–3.
        let e = m.estimate(3);
        assert_eq!((e.low, e.high), (1.0, 3.0));
        // Nothing heard still leaves room for one silent person.
        assert_eq!((m.estimate(0).low, m.estimate(0).high), (0.0, 1.0));
        // Quantiles on one side of zero (a fit on few windows) still bracket the estimate.
        let skewed = Model {
            rate: 0.5,
            q_low: 0.5,
            q_high: 1.5,
        };
        let e = skewed.estimate(9);
        assert!(e.low <= e.estimate && e.estimate <= e.high, "{e:?}");
    }

    #[test]
    fn a_heavy_value_pulls_the_weighted_quantile() {
        let v = [(1.0, 1.0), (2.0, 1.0), (10.0, 2.0)];
        assert_eq!(weighted_quantile(&v, 0.25), Some(1.0));
        assert_eq!(weighted_quantile(&v, 0.5), Some(2.0));
        assert_eq!(weighted_quantile(&v, 0.6), Some(10.0));
        assert_eq!(weighted_quantile(&[], 0.5), None);
    }

    #[test]
    fn quantiles_interpolate() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 0.5), Some(2.5));
        assert_eq!(quantile(&v, 1.0), Some(4.0));
    }
}
