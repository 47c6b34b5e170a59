//! The two scores the hyper-parameter search selects by: AUC (Mann–Whitney with mid-ranks, as
//! pROC and scikit-learn's `roc_auc_score`) and mean log-loss (scikit-learn's `log_loss`, with
//! probabilities clipped to [1e-15, 1 − 1e-15]).

/// AUC = P(score of a random positive > score of a random negative) + ½ P(tie), from mid-ranks.
/// `None` when one class is absent.
pub fn auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] {
                rank_sum_pos += mid;
            }
        }
        i = j + 1;
    }
    let np = n_pos as f64;
    Some((rank_sum_pos - np * (np + 1.0) / 2.0) / (np * n_neg as f64))
}

/// Mean binary log-loss with clipping to [1e-15, 1 − 1e-15].
pub fn log_loss(probs: &[f64], labels: &[bool]) -> f64 {
    let eps = 1e-15;
    let s: f64 = probs
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = p.clamp(eps, 1.0 - eps);
            if y { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    s / probs.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_hand_counts() {
        // pairs (pos, neg): 0.8>0.3, 0.8>0.5, 0.5=0.5 (½), 0.5>0.3 -> 3.5 / 4
        let s = [0.8, 0.5, 0.5, 0.3];
        let y = [true, true, false, false];
        assert!((auc(&s, &y).unwrap() - 0.875).abs() < 1e-15);
        assert!(auc(&s, &[true; 4]).is_none());
        // scikit-learn: log_loss([1,0],[0.8,0.3]) = 0.2899092476264711
        assert!((log_loss(&[0.8, 0.3], &[true, false]) - 0.289_909_247_626_471_1).abs() < 1e-15);
    }
}
