//! `fusion-multineg`: the original fusion script. One supervised row per kept anchor: the
//! non-empty positive columns fused into one text `<col>: <value>, ...`, and
//! `--num-negatives` (default 5) negatives `negative_1..k`.

use embtune_core::{
    register_strategy, ColumnSpec, DefaultColumns, ExampleSink, GenContext, NegativeBatch,
    PairStrategy, Result,
};
use serde::{Deserialize, Serialize};

/// Config of `fusion-multineg` (no options; k is `--num-negatives`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FusionConfig {}

/// The fusion script's strategy.
#[derive(Debug, Clone, Default)]
pub struct FusionMultineg;

/// The fused positive of table row `row`: `<col>: <value>` for each non-empty positive
/// column in command-line order, joined by `, `; empty when all are empty.
pub fn fused_positive(
    ctx: &GenContext<'_>,
    cols: &[(&str, Option<usize>)],
    row: usize,
    out: &mut String,
) {
    out.clear();
    for &(name, col) in cols {
        let Some(c) = col else { continue };
        let v = ctx.table.cell(row, c);
        if v.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push_str(": ");
        out.push_str(v);
    }
}

impl PairStrategy for FusionMultineg {
    fn default_columns(&self) -> DefaultColumns {
        DefaultColumns {
            desc: "설명",
            category: "대분류",
            positives: &["대분류", "중분류", "표제어", "영문"],
            num_negatives: 5,
        }
    }

    fn supervised_header(&self, spec: &ColumnSpec) -> Vec<String> {
        let mut h = vec!["anchor".to_string(), "positive".to_string()];
        h.extend((1..=spec.num_negatives).map(|i| format!("negative_{i}")));
        h
    }

    fn generate(&self, ctx: &mut GenContext<'_>, sink: &mut dyn ExampleSink) -> Result<()> {
        let spec = ctx.spec;
        let cols: Vec<(&str, Option<usize>)> = spec
            .positives
            .iter()
            .map(|c| (c.as_str(), ctx.table.column(c)))
            .collect();
        let k = spec.num_negatives;
        let mut text = String::new();
        let mut positive = String::new();
        // Rows in groups, draws first and text lookups after (as in `baseline`).
        let group = crate::baseline::ROWS_AT_ONCE;
        let mut batch = NegativeBatch::default();
        // Fused positives of the group, one after the other, and per draw
        // (anchor, end of its positive in `fused`).
        let mut fused = String::new();
        let mut pending: Vec<(&str, usize)> = Vec::new();
        for (g, rows) in ctx.rows.chunks(group).enumerate() {
            batch.clear();
            pending.clear();
            fused.clear();
            for (j, &row) in rows.iter().enumerate() {
                let i = g * group + j;
                let anchor = ctx.pool.anchors[i];
                ctx.unsupervised_text_into(row, &mut text);
                sink.unsupervised(anchor, &text)?;
                fused_positive(ctx, &cols, row, &mut positive);
                if positive.is_empty() {
                    continue;
                }
                batch.draw(ctx, i, k)?;
                fused.push_str(&positive);
                pending.push((anchor, fused.len()));
            }
            batch.resolve(ctx);
            let mut from = 0;
            // Per group: the fields borrow `fused`, which the next group rewrites.
            let mut fields: Vec<&str> = Vec::with_capacity(2 + k);
            for (d, &(anchor, end)) in pending.iter().enumerate() {
                let pos = &fused[from..end];
                from = end;
                let negs = batch.get(d);
                if negs.is_empty() {
                    continue;
                }
                fields.clear();
                fields.push(anchor);
                fields.push(pos);
                fields.extend_from_slice(negs);
                sink.supervised(&fields)?;
            }
        }
        Ok(())
    }
}

register_strategy!(
    name: "fusion-multineg",
    summary: "the original fusion script: one row per anchor, fused positive, k negatives",
    long: "One row per anchor: positive = the non-empty positive columns (default 대분류 중분류\n\
           표제어 영문) as `<col>: <value>` joined by `, `; rows with no non-empty positive are\n\
           skipped. Negatives negative_1..k (--num-negatives, default 5) from the sampler\n\
           (default same-category over --category-col, default 대분류): distinct while the group\n\
           has enough, then repeated to keep k columns (counted in the manifest). Without\n\
           --domain-col the single part is `all` (all_unsupervised.csv, all_supervised.csv).",
    config: FusionConfig,
    build: |_c| Ok(Box::new(FusionMultineg)),
);

#[cfg(test)]
mod tests {
    use super::*;
    use embtune_core::{testing, NegativeSampler};
    use std::collections::HashSet;

    #[test]
    fn fuses_positives_and_fills_k_columns() {
        let t = testing::table(
            &["d", "c", "p1", "p2"],
            &[
                &["a", "g", "x", "y"],
                &["b", "g", "", "w"],
                &["c", "g", "", ""],   // no positive: unsupervised only
                &["a", "g", "x2", ""], // same text as row 0
                &["z", "h", "q", ""],  // alone in its group: no negative
            ],
        );
        let spec = ColumnSpec {
            desc: "d".into(),
            category: "c".into(),
            positives: vec!["p2".into(), "p1".into()],
            domain: None,
            num_negatives: 3,
        };
        let mut s: Box<dyn NegativeSampler> = testing::build("same-category", &[]).unwrap();
        let out = testing::run_strategy(&FusionMultineg, &mut *s, &t, &spec, 1).unwrap();
        assert_eq!(out.unsupervised.len(), 5);
        let rows: Vec<(&str, &str)> = out
            .supervised
            .iter()
            .map(|r| (r[0].as_str(), r[1].as_str()))
            .collect();
        assert_eq!(
            rows,
            vec![("a", "p2: y, p1: x"), ("b", "p2: w"), ("a", "p1: x2")]
        );
        for r in &out.supervised {
            assert_eq!(r.len(), 5);
            let negs: HashSet<&str> = r[2..].iter().map(String::as_str).collect();
            // Group g has distinct texts a, b, c: two others per anchor, so one repeat.
            assert_eq!(negs.len(), 2, "{r:?}");
            assert!(!negs.contains(r[0].as_str()));
            assert!(negs.iter().all(|n| ["a", "b", "c"].contains(n)));
        }
        assert_eq!(out.repeats, 3);
    }

    #[test]
    fn header_and_defaults() {
        let d = FusionMultineg.default_columns();
        assert_eq!((d.category, d.num_negatives), ("대분류", 5));
        let spec = ColumnSpec {
            desc: "d".into(),
            category: "c".into(),
            positives: vec![],
            domain: None,
            num_negatives: 2,
        };
        assert_eq!(
            FusionMultineg.supervised_header(&spec),
            vec!["anchor", "positive", "negative_1", "negative_2"]
        );
    }
}
