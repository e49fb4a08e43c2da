//! Walks every registered plugin of every kind (built-ins plus anything linked into this
//! test binary): names are unique and kebab-case, docs are non-empty, the default config
//! deserializes from `{}` and every factory builds with it; unknown names list the valid ones.

use embtune_core::registry::{self, is_kebab_case, PluginKind, Registration};
use embtune_core::{ContrastiveLoss, NegativeSampler, PairStrategy};
use serde_json::{Map, Value};

fn walk<T: PluginKind + ?Sized>() -> Vec<&'static str> {
    embtune_plugins::link();
    let entries: &[&Registration<T>] = T::entries().expect("registry builds without duplicates");
    let mut names = Vec::new();
    for r in entries {
        assert!(
            is_kebab_case(r.name),
            "{} '{}' is not kebab-case",
            T::KIND,
            r.name
        );
        assert!(
            !r.summary.trim().is_empty(),
            "{} '{}' has no summary",
            T::KIND,
            r.name
        );
        assert!(
            !r.summary.contains('\n'),
            "{} '{}' summary is not one line",
            T::KIND,
            r.name
        );
        assert!(
            !r.long_doc.trim().is_empty(),
            "{} '{}' has no long doc",
            T::KIND,
            r.name
        );
        let defaults = (r.default_config)();
        assert!(
            defaults.is_object(),
            "{} '{}' default config is not an object: {defaults}",
            T::KIND,
            r.name
        );
        r.build_with(&Map::new())
            .unwrap_or_else(|e| panic!("{} '{}' does not build from {{}}: {e}", T::KIND, r.name));
        // The defaults, fed back in explicitly, build too (keys round-trip).
        let Value::Object(d) = defaults else {
            unreachable!()
        };
        r.build_with(&d).unwrap_or_else(|e| {
            panic!(
                "{} '{}' does not build from its defaults: {e}",
                T::KIND,
                r.name
            )
        });
        names.push(r.name);
    }
    let mut sorted = names.clone();
    sorted.dedup();
    assert_eq!(sorted, names, "duplicate {} names", T::KIND);
    names
}

#[test]
fn every_strategy_is_well_formed() {
    let names = walk::<dyn PairStrategy>();
    for want in ["baseline", "domainwise", "fusion-multineg"] {
        assert!(
            names.contains(&want),
            "strategy {want} missing from {names:?}"
        );
    }
}

#[test]
fn every_sampler_is_well_formed() {
    let names = walk::<dyn NegativeSampler>();
    for want in ["random", "same-category"] {
        assert!(
            names.contains(&want),
            "sampler {want} missing from {names:?}"
        );
    }
}

#[test]
fn every_loss_is_well_formed() {
    let names = walk::<dyn ContrastiveLoss>();
    for want in ["mnrl", "simcse", "triplet"] {
        assert!(names.contains(&want), "loss {want} missing from {names:?}");
    }
}

#[test]
fn unknown_names_list_the_valid_ones() {
    embtune_plugins::link();
    let e = registry::build::<dyn NegativeSampler>("no-such-sampler", &Map::new())
        .err()
        .expect("unknown name fails");
    let msg = e.to_string();
    assert!(msg.contains("unknown sampler 'no-such-sampler'"), "{msg}");
    assert!(
        msg.contains("same-category") && msg.contains("random"),
        "{msg}"
    );
    let e = registry::build::<dyn ContrastiveLoss>("mrnl", &Map::new())
        .err()
        .expect("unknown name fails");
    assert!(e.to_string().contains("mnrl"), "{e}");
}
