//! Classification metrics from a confusion matrix: accuracy, macro-averaged precision / recall /
//! F1 and every class's, as scikit-learn's `classification_report` computes them (a class never
//! predicted has precision 0, one never present recall 0: its `zero_division=0`).

use serde::Serialize;

/// One class's scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScores {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Examples whose true label this is.
    pub support: usize,
}

/// The scores of a set of predictions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassificationMetrics {
    pub n: usize,
    pub accuracy: f64,
    /// The unweighted means over the classes.
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    pub classes: Vec<ClassScores>,
    /// `confusion[true label][predicted label]`.
    pub confusion: Vec<Vec<usize>>,
}

impl ClassificationMetrics {
    /// From `confusion[true][predicted]` (square, one row and column per label).
    pub fn from_confusion(labels: &[String], confusion: Vec<Vec<usize>>) -> Self {
        let k = labels.len();
        assert!(confusion.len() == k && confusion.iter().all(|row| row.len() == k), "a {k}×{k} confusion matrix");
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let n: usize = confusion.iter().flatten().sum();
        let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
        let classes: Vec<ClassScores> = (0..k)
            .map(|i| {
                let support: usize = confusion[i].iter().sum();
                let predicted: usize = confusion.iter().map(|row| row[i]).sum();
                let (precision, recall) = (ratio(confusion[i][i], predicted), ratio(confusion[i][i], support));
                let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
                ClassScores { label: labels[i].clone(), precision, recall, f1, support }
            })
            .collect();
        let mean = |f: fn(&ClassScores) -> f64| classes.iter().map(f).sum::<f64>() / k.max(1) as f64;
        Self {
            n,
            accuracy: ratio(correct, n),
            macro_precision: mean(|c| c.precision),
            macro_recall: mean(|c| c.recall),
            macro_f1: mean(|c| c.f1),
            classes,
            confusion,
        }
    }

    /// From (true, predicted) label indices of `labels.len()` classes.
    pub fn from_pairs(labels: &[String], pairs: impl IntoIterator<Item = (usize, usize)>) -> Self {
        let k = labels.len();
        let mut confusion = vec![vec![0; k]; k];
        for (truth, predicted) in pairs {
            confusion[truth][predicted] += 1;
        }
        Self::from_confusion(labels, confusion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// A 3-class matrix worked out by hand (scikit-learn's `classification_report` gives the same):
    /// rows = truth a, b, c; columns = predicted.
    #[test]
    fn scores_of_a_small_confusion_matrix_worked_by_hand() {
        let m = ClassificationMetrics::from_confusion(&labels(&["a", "b", "c"]), vec![vec![5, 1, 0], vec![2, 3, 1], vec![0, 0, 4]]);
        assert_eq!(m.n, 16);
        assert!((m.accuracy - 12.0 / 16.0).abs() < 1e-12);
        // a: precision 5/7, recall 5/6; b: 3/4, 3/6; c: 4/5, 4/4.
        let expected = [(5.0 / 7.0, 5.0 / 6.0, 6), (3.0 / 4.0, 3.0 / 6.0, 6), (4.0 / 5.0, 1.0, 4)];
        for (class, (p, r, support)) in m.classes.iter().zip(expected) {
            assert!((class.precision - p).abs() < 1e-12 && (class.recall - r).abs() < 1e-12, "{class:?}");
            assert!((class.f1 - 2.0 * p * r / (p + r)).abs() < 1e-12, "{class:?}");
            assert_eq!(class.support, support);
        }
        // F1: a 10/13, b 3/5, c 8/9.
        assert!((m.macro_f1 - (10.0 / 13.0 + 3.0 / 5.0 + 8.0 / 9.0) / 3.0).abs() < 1e-12, "{}", m.macro_f1);
        assert!((m.macro_precision - (5.0 / 7.0 + 0.75 + 0.8) / 3.0).abs() < 1e-12);
        assert!((m.macro_recall - (5.0 / 6.0 + 0.5 + 1.0) / 3.0).abs() < 1e-12);
    }

    /// A class never predicted scores precision 0 (scikit-learn's `zero_division=0`), one never
    /// present recall 0, and neither divides by zero.
    #[test]
    fn classes_never_predicted_or_never_present_score_zero() {
        let m = ClassificationMetrics::from_pairs(&labels(&["x", "y", "z"]), [(0, 0), (0, 0), (1, 0)]);
        assert_eq!(m.confusion, vec![vec![2, 0, 0], vec![1, 0, 0], vec![0, 0, 0]]);
        assert_eq!((m.classes[1].precision, m.classes[1].recall, m.classes[1].f1), (0.0, 0.0, 0.0));
        assert_eq!((m.classes[2].support, m.classes[2].f1), (0, 0.0));
        assert!((m.classes[0].precision - 2.0 / 3.0).abs() < 1e-12 && m.classes[0].recall == 1.0);
        assert!((m.macro_f1 - 0.8 / 3.0).abs() < 1e-12, "{}", m.macro_f1);
    }
}
