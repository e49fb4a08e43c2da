//! `domainwise`: the original domain-wise script. The table is split by `--domain-col`
//! (required); each part is processed exactly like `baseline` and written as
//! `<domain>_unsupervised.csv` / `<domain>_supervised.csv`.

use embtune_core::{
    register_strategy, ColumnSpec, DefaultColumns, DomainUse, ExampleSink, GenContext,
    PairStrategy, Result,
};
use serde::{Deserialize, Serialize};

use crate::baseline;

/// Config of `domainwise` (no options).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DomainwiseConfig {}

/// The domain-wise script's strategy.
#[derive(Debug, Clone, Default)]
pub struct Domainwise;

impl PairStrategy for Domainwise {
    fn default_columns(&self) -> DefaultColumns {
        DefaultColumns {
            desc: "설명",
            category: "분류",
            positives: &["표제어", "영문"],
            num_negatives: 1,
        }
    }

    fn domain_use(&self) -> DomainUse {
        DomainUse::Required
    }

    fn supervised_header(&self, spec: &ColumnSpec) -> Vec<String> {
        baseline::header(spec)
    }

    fn generate(&self, ctx: &mut GenContext<'_>, sink: &mut dyn ExampleSink) -> Result<()> {
        baseline::generate_rows(ctx, sink)
    }
}

register_strategy!(
    name: "domainwise",
    summary: "the original domain-wise script: baseline per --domain-col value, one file pair each",
    long: "Splits the table by the distinct values of --domain-col (required) and runs the baseline\n\
           rules inside each part (category groups are built per part). Defaults: anchor 설명,\n\
           category 분류, positives 표제어 영문. Files: <domain>_unsupervised.csv and\n\
           <domain>_supervised.csv, with domain values made safe as file names.",
    config: DomainwiseConfig,
    build: |_c| Ok(Box::new(Domainwise)),
);

#[cfg(test)]
mod tests {
    use super::*;
    use embtune_core::{testing, NegativeSampler};

    #[test]
    fn same_rows_as_baseline_and_requires_a_domain() {
        assert_eq!(Domainwise.domain_use(), DomainUse::Required);
        let d = Domainwise.default_columns();
        assert_eq!(d.positives, &["표제어", "영문"]);
        let t = testing::table(
            &["d", "c", "p"],
            &[&["a", "g", "pa"], &["b", "g", "pb"], &["c", "g", ""]],
        );
        let spec = ColumnSpec {
            desc: "d".into(),
            category: "c".into(),
            positives: vec!["p".into()],
            domain: Some("x".into()),
            num_negatives: 1,
        };
        let mut s1: Box<dyn NegativeSampler> = testing::build("same-category", &[]).unwrap();
        let mut s2: Box<dyn NegativeSampler> = testing::build("same-category", &[]).unwrap();
        let a = testing::run_strategy(&Domainwise, &mut *s1, &t, &spec, 5).unwrap();
        let b = testing::run_strategy(&baseline::Baseline, &mut *s2, &t, &spec, 5).unwrap();
        assert_eq!(a, b);
        // 3 category rows + 2 non-empty positives.
        assert_eq!(a.supervised.len(), 5);
    }
}
