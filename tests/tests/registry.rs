//! Walks every registered plugin of every kind (built-ins plus anything linked into this
//! test binary): names are unique and kebab-case, docs are non-empty, the default config
//! deserializes from `{}` and every factory builds with it; unknown names list the valid ones.
//! The descriptions `embtune list` prints without libtorch (`registry::infos`,
//! `registry::loss_infos`) match the buildable registrations one to one.

use embtune_core::registry::{self, is_kebab_case, PluginInfo, PluginKind, Registration};
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

/// The descriptions of kind `T` are those of its registrations, field for field.
fn same_as_registrations<T: PluginKind + ?Sized>(infos: &[PluginInfo]) {
    let entries = T::entries().unwrap();
    assert_eq!(
        infos.iter().map(|i| i.name).collect::<Vec<_>>(),
        entries.iter().map(|r| r.name).collect::<Vec<_>>(),
        "{}: described and buildable names differ",
        T::KIND
    );
    for (i, r) in infos.iter().zip(entries) {
        assert_eq!(i.summary, r.summary, "{} '{}'", T::KIND, r.name);
        assert_eq!(i.long_doc, r.long_doc, "{} '{}'", T::KIND, r.name);
        assert_eq!(i.origin, r.origin, "{} '{}'", T::KIND, r.name);
        assert_eq!(
            (i.default_config)(),
            (r.default_config)(),
            "{} '{}'",
            T::KIND,
            r.name
        );
    }
}

#[test]
fn descriptions_match_the_registrations() {
    embtune_plugins::link();
    same_as_registrations::<dyn PairStrategy>(&registry::infos::<dyn PairStrategy>().unwrap());
    same_as_registrations::<dyn NegativeSampler>(
        &registry::infos::<dyn NegativeSampler>().unwrap(),
    );
    // Losses: the torch-free descriptions that register_loss! submits on their own.
    let losses = registry::loss_infos().expect("loss descriptions without duplicates");
    for want in [
        "angle",
        "cached-mnrl",
        "cosent",
        "mnrl",
        "simcse",
        "triplet",
    ] {
        assert!(
            losses.iter().any(|i| i.name == want),
            "loss {want} has no description"
        );
    }
    same_as_registrations::<dyn ContrastiveLoss>(&losses);
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
