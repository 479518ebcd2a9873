//! Model-quality metrics shared by training reports, tests and benchmarks.

/// Ranks of `v` from 0, ties sharing their average rank.
pub fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut out = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0;
        for k in &idx[i..=j] {
            out[*k] = rank;
        }
        i = j + 1;
    }
    out
}

/// Spearman's rank correlation.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma).powi(2);
        vb += (y - mb).powi(2);
    }
    cov / (va * vb).sqrt()
}

/// ROC AUC of `abnormality` (higher = more likely positive) against
/// `labels` (1 = positive), ties counted half (Mann–Whitney U).
pub fn roc_auc(abnormality: &[f64], labels: &[u8]) -> f64 {
    let r = ranks(abnormality);
    let pos = labels.iter().filter(|l| **l == 1).count() as f64;
    let neg = labels.len() as f64 - pos;
    let rank_sum: f64 = r
        .iter()
        .zip(labels)
        .filter(|(_, l)| **l == 1)
        .map(|(r, _)| r + 1.0)
        .sum();
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_cases() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), [2.5, 0.0, 2.5, 1.0]);
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(roc_auc(&[0.9, 0.8, 0.1, 0.2], &[1, 1, 0, 0]), 1.0);
        assert_eq!(roc_auc(&[0.5, 0.5], &[1, 0]), 0.5);
    }
}
