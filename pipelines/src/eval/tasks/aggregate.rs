//! lm-eval's aggregation of per-doc metric values (`lm_eval/api/metrics.py`): `mean` for acc and
//! acc_norm with its closed-form standard error (`mean_stderr`: sample standard deviation over
//! √n), `perplexity` (exp of minus the mean log-likelihood) with the bootstrap standard error
//! lm-eval computes (100,000 resamples drawn as `random.Random(i).choices(xs, k=len(xs))` for
//! i = 0‥99, 1,000 each). One doc has no standard error ("N/A" there).

use super::python_random::PythonRandom;

/// lm-eval's default `bootstrap_iters`.
pub const BOOTSTRAP_ITERS: usize = 100_000;
/// Resamples drawn from one seed.
const CHUNK: usize = 1000;

/// A task's aggregated metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    pub metric: &'static str,
    pub value: f64,
    /// `None` for a single doc.
    pub stderr: Option<f64>,
}

/// Aggregates the docs' values of `metric` as lm-eval does, with `bootstrap_iters` resamples
/// for a bootstrapped standard error.
pub fn aggregate(metric: &'static str, values: &[f64], bootstrap_iters: usize) -> Aggregate {
    let (statistic, bootstrapped): (fn(&[f64]) -> f64, bool) = match metric {
        "perplexity" => (perplexity, true),
        _ => (mean, false),
    };
    let stderr = (values.len() > 1).then(|| if bootstrapped { bootstrap_stderr(statistic, values, bootstrap_iters) } else { mean_stderr(values) });
    Aggregate { metric, value: statistic(values), stderr }
}

/// A group's score from its tasks' (value, stderr, docs) as lm-eval 0.4.13's `Group.aggregate`
/// with `weight_by_size`: the mean weighted by docs (`aggregate_subtask_metrics`) and the pooled
/// standard error (`pooled_sample_stderr`), none ("N/A") when a task has none (a single doc).
pub fn group_aggregate(metric: &'static str, tasks: &[(f64, Option<f64>, usize)]) -> Aggregate {
    let docs: usize = tasks.iter().map(|&(_, _, n)| n).sum();
    let value = tasks.iter().map(|&(v, _, n)| v * n as f64).sum::<f64>() / docs as f64;
    let stderr = tasks.iter().map(|&(_, s, n)| s.map(|s| (n as f64 - 1.0) * s * s * n as f64)).sum::<Option<f64>>();
    let stderr = stderr.map(|pooled| (pooled / (docs - tasks.len()) as f64 / docs as f64).sqrt());
    Aggregate { metric, value, stderr }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn perplexity(lls: &[f64]) -> f64 {
    (-mean(lls)).exp()
}

fn sample_stddev(values: &[f64]) -> f64 {
    let mu = mean(values);
    (values.iter().map(|x| (x - mu) * (x - mu)).sum::<f64>() / (values.len() - 1) as f64).sqrt()
}

fn mean_stderr(values: &[f64]) -> f64 {
    sample_stddev(values) / (values.len() as f64).sqrt()
}

/// lm-eval's `bootstrap_stderr`: the sample standard deviation of `statistic` over resamples.
fn bootstrap_stderr(statistic: fn(&[f64]) -> f64, values: &[f64], iters: usize) -> f64 {
    let chunk = CHUNK.min(iters);
    let mut replicates = Vec::with_capacity(iters);
    let mut resample = vec![0.0; values.len()];
    for seed in 0..iters / chunk {
        let mut random = PythonRandom::new(seed as u32);
        for _ in 0..chunk {
            for slot in resample.iter_mut() {
                *slot = values[random.choice_index(values.len())];
            }
            replicates.push(statistic(&resample));
        }
    }
    sample_stddev(&replicates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_stderr_equals_lm_evals() {
        // lm-eval's loop in Python: res = [perplexity(random.Random(i).choices(xs, k=5)) ...] for i
        // in range(100), 1000 draws each; sample_stddev(res) = 10248474.726261951.
        let xs = [-11.5, -3.25, -7.0, -20.125, -1.0];
        let got = aggregate("perplexity", &xs, BOOTSTRAP_ITERS);
        let expected = 10248474.726261951;
        assert!(((got.stderr.unwrap() - expected) / expected).abs() < 1e-12, "{got:?}");
        assert_eq!(aggregate("acc", &[1.0], BOOTSTRAP_ITERS).stderr, None);
        let acc = aggregate("acc", &[1.0, 0.0, 0.0, 1.0], BOOTSTRAP_ITERS);
        assert_eq!((acc.value, acc.stderr), (0.5, Some((1.0f64 / 3.0).sqrt() / 2.0)));
    }
}
