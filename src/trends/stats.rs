//! The statistics `trends` needs: quantiles, and the one-sided Mann-Whitney U test with
//! its exact null distribution (ties included). No crate offers the exact conditional
//! distribution with ties; the normal approximation most offer is far off in the tail
//! when one sample has 5 values (3.1e-6 exact against 2e-4 approximated for 5 values
//! above 30), which is exactly the detector's case.

/// Quantile `q` in [0, 1] of an ascending slice, interpolating between order statistics
/// (Hyndman-Fan type 7, numpy's default): p50 of [1, 2, 3, 4] is 2.5. `None` if empty.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let h = last as f64 * q.clamp(0.0, 1.0);
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// A sorted copy of `values`.
pub fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// The median of `values` (unsorted).
pub fn median(values: &[f64]) -> Option<f64> {
    quantile_sorted(&sorted(values), 0.5)
}

/// A one-sided Mann-Whitney U test of "`y` tends to be larger than `x`".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// Pairs (x, y) with y > x, plus half the pairs with y == x: in [0, n·k].
    pub u: f64,
    /// P(U ≥ observed) when every arrangement of the pooled values is equally likely;
    /// 1 when all values are tied.
    pub p_value: f64,
}

/// The exact one-sided test that `y` (the recent builds) is larger than `x` (the
/// baseline). The null distribution of `y`'s rank sum is counted over all C(N, k)
/// subsets of the pooled mid-ranks by dynamic programming over doubled mid-ranks (so
/// ties stay integers): about N·k·2Nk steps, 60 thousand for N = 35, k = 5. `None` if
/// either side is empty or the work would exceed what a report can afford (k and N far
/// beyond the detector's 5 and 35).
pub fn mann_whitney_greater(x: &[f64], y: &[f64]) -> Option<MannWhitney> {
    const WORK_LIMIT: usize = 20_000_000;
    let (n, k) = (x.len(), y.len());
    let total = n + k;
    let max_sum = 2 * total * k;
    if n == 0 || k == 0 || total * k * max_sum > WORK_LIMIT {
        return None;
    }
    let mut pooled: Vec<(f64, bool)> = x
        .iter()
        .map(|&v| (v, false))
        .chain(y.iter().map(|&v| (v, true)))
        .collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Doubled mid-ranks: values tied over ranks i+1..=j all get i+1+j.
    let mut ranks2 = vec![0usize; total];
    let mut all_tied = false;
    let mut i = 0;
    while i < total {
        let mut j = i + 1;
        while j < total && pooled[j].0 == pooled[i].0 {
            j += 1;
        }
        ranks2[i..j].fill(i + 1 + j);
        all_tied = i == 0 && j == total;
        i = j;
    }
    let observed2: usize = (0..total).filter(|&i| pooled[i].1).map(|i| ranks2[i]).sum();
    let u = observed2 as f64 / 2.0 - (k * (k + 1)) as f64 / 2.0;
    if all_tied {
        return Some(MannWhitney { u, p_value: 1.0 });
    }
    // ways[j][s]: how many j-subsets of the ranks seen so far have doubled sum s.
    let width = max_sum + 1;
    let mut ways = vec![0f64; (k + 1) * width];
    ways[0] = 1.0;
    let mut reach = 0;
    for &r in &ranks2 {
        reach = (reach + r).min(max_sum);
        for j in (1..=k).rev() {
            let (below, from_j) = ways.split_at_mut(j * width);
            let prev = &below[(j - 1) * width..];
            for s in (r..=reach).rev() {
                from_j[s] += prev[s - r];
            }
        }
    }
    let row = &ways[k * width..];
    let all: f64 = row.iter().sum();
    let tail: f64 = row[observed2..].iter().sum();
    Some(MannWhitney {
        u,
        p_value: (tail / all).min(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binom(n: u64, k: u64) -> f64 {
        (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
    }

    #[test]
    fn quantiles_interpolate() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        let p90 = quantile_sorted(&ten, 0.9).unwrap();
        assert!((p90 - 9.1).abs() < 1e-12, "{p90}");
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn five_values_above_all_others_have_the_smallest_possible_p() {
        let x: Vec<f64> = (0..30).map(f64::from).collect();
        let y = [100.0, 101.0, 102.0, 103.0, 104.0];
        let r = mann_whitney_greater(&x, &y).unwrap();
        assert_eq!(r.u, 150.0);
        assert!((r.p_value - 1.0 / binom(35, 5)).abs() < 1e-18);
        assert_eq!(mann_whitney_greater(&y, &x).unwrap().p_value, 1.0);
    }

    #[test]
    fn the_exact_p_value_with_ties_matches_counting_every_subset() {
        let x = [1.0, 2.0, 2.0, 3.0, 3.0, 3.0];
        let y = [3.0, 4.0, 2.0];
        let pooled: Vec<f64> = x.iter().chain(&y).copied().collect();
        let u_of = |ys: &[f64], xs: &[f64]| -> f64 {
            ys.iter()
                .flat_map(|&b| {
                    xs.iter().map(move |&a| match b.total_cmp(&a) {
                        std::cmp::Ordering::Greater => 1.0,
                        std::cmp::Ordering::Equal => 0.5,
                        std::cmp::Ordering::Less => 0.0,
                    })
                })
                .sum()
        };
        let observed = u_of(&y, &x);
        let r = mann_whitney_greater(&x, &y).unwrap();
        assert_eq!(r.u, observed);
        let (mut tail, mut all) = (0u32, 0u32);
        for a in 0..9 {
            for b in a + 1..9 {
                for c in b + 1..9 {
                    let ys = [pooled[a], pooled[b], pooled[c]];
                    let xs: Vec<f64> = (0..9)
                        .filter(|i| ![a, b, c].contains(i))
                        .map(|i| pooled[i])
                        .collect();
                    all += 1;
                    tail += u32::from(u_of(&ys, &xs) >= observed - 1e-9);
                }
            }
        }
        assert_eq!(all, 84);
        assert!((r.p_value - f64::from(tail) / 84.0).abs() < 1e-12);
    }

    #[test]
    fn all_tied_says_nothing() {
        let r = mann_whitney_greater(&[1000.0; 30], &[1000.0; 5]).unwrap();
        assert_eq!(r.p_value, 1.0);
        let step = mann_whitney_greater(&[1000.0; 30], &[1500.0; 5]).unwrap();
        assert!((step.p_value - 1.0 / binom(35, 5)).abs() < 1e-18);
    }
}
