//! `baseline`: the original "basic" script. One unsupervised text per kept row; for each
//! of [category column] + positive columns, a supervised row `anchor, positive,
//! hard_negative` with a negative from the sampler (same category by default).

use embtune_core::{
    register_strategy, ColumnSpec, DefaultColumns, ExampleSink, GenContext, NegativeBatch,
    PairStrategy, Result,
};
use serde::{Deserialize, Serialize};

/// Config of `baseline` (no options: the columns and k come from the command line).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BaselineConfig {}

/// The basic script's strategy.
#[derive(Debug, Clone, Default)]
pub struct Baseline;

/// The basic script's column defaults.
pub const DEFAULTS: DefaultColumns = DefaultColumns {
    desc: "설명",
    category: "분류",
    positives: &["대분류", "중분류"],
    num_negatives: 1,
};

/// Rows whose negatives are drawn before their texts are looked up (see
/// [`NegativeBatch`]).
pub const ROWS_AT_ONCE: usize = 32;

/// `anchor, positive, hard_negative` for k = 1 (the original), `hard_negative_1..k` else.
pub fn header(spec: &ColumnSpec) -> Vec<String> {
    let mut h = vec!["anchor".to_string(), "positive".to_string()];
    if spec.num_negatives == 1 {
        h.push("hard_negative".into());
    } else {
        h.extend((1..=spec.num_negatives).map(|i| format!("hard_negative_{i}")));
    }
    h
}

/// The shared body of `baseline` and `domainwise`: per kept row, the unsupervised text,
/// then one supervised row per non-empty positive cell (category column first) that
/// differs from the anchor and has at least one negative candidate.
pub fn generate_rows(ctx: &mut GenContext<'_>, sink: &mut dyn ExampleSink) -> Result<()> {
    let table = ctx.table;
    let cols: Vec<Option<usize>> = std::iter::once(&ctx.spec.category)
        .chain(ctx.spec.positives.iter())
        .map(|c| table.column(c))
        .collect();
    let k = ctx.spec.num_negatives;
    let mut text = String::new();
    // Rows go in groups of ROWS_AT_ONCE: every draw of the group first (in row order, so
    // the same draws as one row at a time), then one lookup of all their texts, then the
    // rows. Output order is unchanged.
    let mut batch = NegativeBatch::default();
    // (anchor, positive) of each draw of the group.
    let mut pending: Vec<(&str, &str)> = Vec::new();
    let mut fields: Vec<&str> = Vec::with_capacity(2 + k);
    for (g, rows) in ctx.rows.chunks(ROWS_AT_ONCE).enumerate() {
        batch.clear();
        pending.clear();
        for (j, &row) in rows.iter().enumerate() {
            let i = g * ROWS_AT_ONCE + j;
            let anchor = ctx.pool.anchors[i];
            ctx.unsupervised_text_into(row, &mut text);
            sink.unsupervised(anchor, &text)?;
            for c in cols.iter().flatten() {
                let positive = table.cell(row, *c);
                if !positive.is_empty() && positive != anchor {
                    batch.draw(ctx, i, k)?;
                    pending.push((anchor, positive));
                }
            }
        }
        batch.resolve(ctx);
        for (d, &(anchor, positive)) in pending.iter().enumerate() {
            let negs = batch.get(d);
            if negs.is_empty() {
                continue;
            }
            fields.clear();
            fields.push(anchor);
            fields.push(positive);
            fields.extend_from_slice(negs);
            sink.supervised(&fields)?;
        }
    }
    Ok(())
}

impl PairStrategy for Baseline {
    fn default_columns(&self) -> DefaultColumns {
        DEFAULTS
    }

    fn supervised_header(&self, spec: &ColumnSpec) -> Vec<String> {
        header(spec)
    }

    fn generate(&self, ctx: &mut GenContext<'_>, sink: &mut dyn ExampleSink) -> Result<()> {
        generate_rows(ctx, sink)
    }
}

register_strategy!(
    name: "baseline",
    summary: "the original basic script: (anchor, positive, hard_negative) per positive column",
    long: "For each row with a non-empty anchor (--desc-col, default 설명): one unsupervised text\n\
           `[col] value ...` over the anchor and positive columns sorted by name; and for each of\n\
           the category column (default 분류) and the positive columns (default 대분류 중분류),\n\
           in that order, a row anchor,positive,hard_negative when the cell is non-empty, differs\n\
           from the anchor and the sampler finds a negative. Output files: all_unsupervised.csv /\n\
           all_supervised.csv with --output-dir, or --output-unsupervised / --output-supervised.",
    config: BaselineConfig,
    build: |_c| Ok(Box::new(Baseline)),
);

#[cfg(test)]
mod tests {
    use super::*;
    use embtune_core::testing;
    use embtune_core::NegativeSampler;

    fn spec(positives: &[&str]) -> ColumnSpec {
        ColumnSpec {
            desc: "d".into(),
            category: "c".into(),
            positives: positives.iter().map(|s| s.to_string()).collect(),
            domain: None,
            num_negatives: 1,
        }
    }

    #[test]
    fn rows_follow_the_basic_rules() {
        // Row 3 has an empty anchor (skipped); row 1's positive equals its anchor (skipped);
        // "z" is alone in its category (no candidate: no supervised rows).
        let t = testing::table(
            &["d", "c", "p"],
            &[
                &["apple", "fruit", "red"],
                &["pear", "fruit", "pear"],
                &[" ", "fruit", "x"],
                &["z", "other", "q"],
            ],
        );
        let mut s: Box<dyn NegativeSampler> = testing::build("same-category", &[]).unwrap();
        let out = testing::run_strategy(&Baseline, &mut *s, &t, &spec(&["p"]), 42).unwrap();
        assert_eq!(
            out.unsupervised,
            vec!["[d] apple [p] red", "[d] pear [p] pear", "[d] z [p] q"]
        );
        assert_eq!(
            out.supervised,
            vec![
                vec!["apple", "fruit", "pear"],
                vec!["apple", "red", "pear"],
                vec!["pear", "fruit", "apple"],
            ]
        );
        assert_eq!(out.repeats, 0);
    }

    #[test]
    fn header_names() {
        assert_eq!(
            header(&spec(&[])),
            vec!["anchor", "positive", "hard_negative"]
        );
        let mut s = spec(&[]);
        s.num_negatives = 2;
        assert_eq!(
            header(&s),
            vec!["anchor", "positive", "hard_negative_1", "hard_negative_2"]
        );
    }

    #[test]
    fn defaults_are_the_originals() {
        let d = Baseline.default_columns();
        assert_eq!(
            (d.desc, d.category, d.positives),
            ("설명", "분류", &["대분류", "중분류"][..])
        );
    }
}
