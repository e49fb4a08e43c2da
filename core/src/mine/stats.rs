//! The statistics `mine_hard_negatives` prints at the end (sentence-transformers v6
//! `sentence_transformers/util/hard_negatives.py`, "Report some statistics"): count, mean,
//! median, std, min, quartiles and max of the positive scores, the negative scores and
//! their differences, the candidates each filter skipped, and the samples that could not
//! get enough negatives.

use super::filter::Skipped;

/// Summary of one list of scores, computed as torch computes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of scores.
    pub count: usize,
    /// Mean (NaN when empty).
    pub mean: f64,
    /// `torch.median`: the lower of the two middle values for an even count.
    pub median: f64,
    /// `torch.std`: the unbiased (n - 1) standard deviation.
    pub std: f64,
    /// Minimum (`inf` when empty, as the reference prints it).
    pub min: f64,
    /// `torch.quantile(q=0.25)`, linear interpolation.
    pub q25: f64,
    /// `torch.quantile(q=0.5)`.
    pub q50: f64,
    /// `torch.quantile(q=0.75)`.
    pub q75: f64,
    /// Maximum (`-inf` when empty).
    pub max: f64,
}

impl Summary {
    /// The summary of `values`.
    pub fn of(values: &[f32]) -> Summary {
        let n = values.len();
        let mut v: Vec<f64> = values.iter().map(|&x| f64::from(x)).collect();
        v.sort_by(f64::total_cmp);
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
        let quantile = |q: f64| {
            if n == 0 {
                return f64::INFINITY;
            }
            let pos = q * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = pos.ceil() as usize;
            v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
        };
        Summary {
            count: n,
            mean,
            median: if n == 0 { f64::NAN } else { v[(n - 1) / 2] },
            std: var.sqrt(),
            min: v.first().copied().unwrap_or(f64::INFINITY),
            q25: quantile(0.25),
            q50: quantile(0.5),
            q75: quantile(0.75),
            max: v.last().copied().unwrap_or(f64::NEG_INFINITY),
        }
    }
}

/// What a mining run did: the reference's printed statistics plus the sizes of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct MineStats {
    /// Input rows (pairs).
    pub n_rows: usize,
    /// Unique anchors (queries).
    pub n_queries: usize,
    /// Documents searched: the corpus plus the positives, deduplicated.
    pub n_corpus: usize,
    /// The `range_max` used (given or derived).
    pub range_max: usize,
    /// Output rows written.
    pub rows: usize,
    /// The most output rows the format allows (the reference's `maximum_possible_samples`).
    pub maximum_possible: usize,
    /// Scores of the (anchor, positive) pairs.
    pub positive: Summary,
    /// Scores of the negatives written (per positive, as the reference counts them).
    pub negative: Summary,
    /// Positive minus negative score, per pair of them.
    pub difference: Summary,
    /// Candidates removed by each filter.
    pub skipped: Vec<Skipped>,
}

impl MineStats {
    /// Samples that got too few negatives: `maximum_possible - rows` (the reference's
    /// "Could not find enough negatives for N samples").
    pub fn missing(&self) -> usize {
        self.maximum_possible.saturating_sub(self.rows)
    }

    /// The reference's report, line for line: the metric table, one "Skipped ..." line per
    /// filter and the "Could not find enough negatives ..." line. Parameter names are the
    /// command line's (`--range-max`), since that is what the reader can change.
    pub fn report(&self, range_min: usize, params: &ParamsShown) -> String {
        let mut out = String::new();
        let row = |out: &mut String, a: &str, b: &str, c: &str, d: &str| {
            out.push_str(&format!("{a:<6} {b:>14} {c:>14} {d:>14}\n"));
        };
        row(&mut out, "Metric", "Positive", "Negative", "Difference");
        row(
            &mut out,
            "Count",
            &thousands(self.positive.count),
            &thousands(self.negative.count),
            "",
        );
        let f = |x: f64| format!("{x:.4}");
        let metrics: [(&str, fn(&Summary) -> f64); 8] = [
            ("Mean", |s| s.mean),
            ("Median", |s| s.median),
            ("Std", |s| s.std),
            ("Min", |s| s.min),
            ("25%", |s| s.q25),
            ("50%", |s| s.q50),
            ("75%", |s| s.q75),
            ("Max", |s| s.max),
        ];
        for (name, get) in metrics {
            row(
                &mut out,
                name,
                &f(get(&self.positive)),
                &f(get(&self.negative)),
                &f(get(&self.difference)),
            );
        }
        for s in &self.skipped {
            out.push_str(&format!(
                "Skipped {} potential negatives ({:.2}%) due to the {} of {}.\n",
                thousands(s.count),
                s.ratio * 100.0,
                flag(s.param),
                python_float(s.value)
            ));
        }
        let missing = self.missing();
        if missing > 0 {
            let mut solutions = vec!["range_max"];
            if range_min > 0 {
                solutions.push("range_min");
            }
            if params.absolute_margin {
                solutions.push("absolute_margin");
            }
            if params.relative_margin {
                solutions.push("relative_margin");
            }
            if params.max_score {
                solutions.push("max_score");
            }
            let names: Vec<String> = solutions.iter().map(|s| flag(s)).collect();
            let considered = match names.split_last() {
                Some((last, rest)) if !rest.is_empty() => {
                    format!("{} and {last}", rest.join(", "))
                }
                _ => names[0].clone(),
            };
            out.push_str(&format!(
                "Could not find enough negatives for {missing} samples ({:.2}%). Consider adjusting the {considered} parameter{} if you'd like to find more valid negatives.\n",
                missing as f64 / self.maximum_possible as f64 * 100.0,
                if names.len() > 1 { "s" } else { "" }
            ));
        }
        out
    }
}

/// Which optional filters were set (the "Consider adjusting ..." line lists them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParamsShown {
    /// `absolute_margin` was given.
    pub absolute_margin: bool,
    /// `relative_margin` was given.
    pub relative_margin: bool,
    /// `max_score` was given.
    pub max_score: bool,
}

/// `range_max` -> `--range-max`.
fn flag(param: &str) -> String {
    format!("--{}", param.replace('_', "-"))
}

/// `1234567` -> `1,234,567` (Python's `{:,}`).
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A float as Python prints it: `0.05`, `1.0`.
fn python_float(x: f64) -> String {
    if x.fract() == 0.0 && x.is_finite() {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_torchs() {
        // torch.tensor([4., 1., 3., 2.]): median 2 (lower middle), std 1.2910,
        // quantile(0.25) 1.75.
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!(
            (s.count, s.mean, s.median, s.min, s.max),
            (4, 2.5, 2.0, 1.0, 4.0)
        );
        assert!((s.std - 1.290_994_4).abs() < 1e-6);
        assert_eq!((s.q25, s.q50, s.q75), (1.75, 2.5, 3.25));
        let e = Summary::of(&[]);
        assert_eq!(
            (e.min, e.max, e.q25),
            (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY)
        );
    }

    #[test]
    fn report_lines() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(0.05), "0.05");
        let st = MineStats {
            n_rows: 4,
            n_queries: 2,
            n_corpus: 10,
            range_max: 5,
            rows: 3,
            maximum_possible: 4,
            positive: Summary::of(&[0.9, 0.8]),
            negative: Summary::of(&[0.5, 0.4, 0.3]),
            difference: Summary::of(&[0.4, 0.5, 0.5]),
            skipped: vec![Skipped {
                param: "max_score",
                value: 0.8,
                count: 1234,
                ratio: 0.25,
            }],
        };
        let r = st.report(
            0,
            &ParamsShown {
                max_score: true,
                ..Default::default()
            },
        );
        assert!(
            r.starts_with("Metric       Positive       Negative     Difference\n"),
            "{r}"
        );
        assert!(
            r.contains("\nCount               2              3               \n"),
            "{r}"
        );
        assert!(
            r.contains("Skipped 1,234 potential negatives (25.00%) due to the --max-score of 0.8."),
            "{r}"
        );
        assert!(r.contains("Could not find enough negatives for 1 samples (25.00%). Consider adjusting the --range-max and --max-score parameters"), "{r}");
    }
}
