//! Plugin registries: one mechanism (`inventory`), three kinds (strategies, samplers,
//! losses). A plugin registers a [`Registration`] with one of the `register_*!` macros; the
//! registry of a kind is collected and checked once, on first use.
//!
//! Rules: names are kebab-case (`[a-z0-9]+(-[a-z0-9]+)*`); a duplicate name is an error
//! naming both registrations; an unknown name is an error listing the valid names.
//!
//! Names are resolved here, at the top ([`build`], called by the command line); the
//! library entry points (`gen::generate`, the trainer) take the built instances.
//!
//! What `embtune list` prints ([`PluginInfo`]: name, docs, default config) is available in
//! every build: [`infos`] for strategies and samplers, [`loss_infos`] for losses, whose
//! `register_loss!` also registers a [`LossInfo`] without libtorch; the buildable loss
//! [`Registration`] exists only in builds with the `torch` feature.

use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
#[cfg(feature = "torch")]
use crate::loss::ContrastiveLoss;
use crate::sampler::NegativeSampler;
use crate::strategy::PairStrategy;

/// One registered plugin of kind `T` (`dyn PairStrategy`, `dyn NegativeSampler` or
/// `dyn ContrastiveLoss`). Built by the `register_*!` macros; plugin authors rarely write it
/// by hand.
pub struct Registration<T: ?Sized + 'static> {
    /// Registry key, kebab-case (`same-category`).
    pub name: &'static str,
    /// One line for `embtune list`.
    pub summary: &'static str,
    /// Several lines for `embtune list KIND` and docs.
    pub long_doc: &'static str,
    /// `module_path!()` of the registering code, used to name both sides of a duplicate.
    pub origin: &'static str,
    /// The config with every default filled in, as JSON.
    pub default_config: fn() -> Value,
    /// Builds the plugin from a (possibly partial) JSON config object.
    pub build: fn(&Value) -> Result<Box<T>>,
}

impl<T: ?Sized + 'static> std::fmt::Debug for Registration<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .finish()
    }
}

impl<T: ?Sized + 'static> Registration<T> {
    /// Builds the plugin from its defaults overridden by `options`.
    pub fn build_with(&self, options: &Map<String, Value>) -> Result<Box<T>> {
        (self.build)(&Value::Object(options.clone()))
    }

    /// What `embtune list` shows of it.
    pub fn info(&self) -> PluginInfo {
        PluginInfo {
            name: self.name,
            summary: self.summary,
            long_doc: self.long_doc,
            origin: self.origin,
            default_config: self.default_config,
        }
    }
}

/// A plugin as `embtune list` shows it: the fields of a [`Registration`] but the factory,
/// so it exists in builds without libtorch too.
#[derive(Debug, Clone, Copy)]
pub struct PluginInfo {
    /// Registry key, kebab-case.
    pub name: &'static str,
    /// One line for `embtune list`.
    pub summary: &'static str,
    /// Several lines for `embtune list KIND` and docs.
    pub long_doc: &'static str,
    /// `module_path!()` of the registering code.
    pub origin: &'static str,
    /// The config with every default filled in, as JSON.
    pub default_config: fn() -> Value,
}

/// The description of a loss, registered by `register_loss!` in every build; the loss's
/// buildable [`Registration`] is registered beside it only in builds with core's `torch`
/// feature. This is what lets a torch-free binary list the losses.
#[derive(Debug)]
pub struct LossInfo(pub PluginInfo);

inventory::collect!(Registration<dyn PairStrategy>);
inventory::collect!(Registration<dyn NegativeSampler>);
#[cfg(feature = "torch")]
inventory::collect!(Registration<dyn ContrastiveLoss>);
inventory::collect!(LossInfo);

/// Name and origin of a registry entry, for the checks of [`collect_checked`].
trait Entry {
    fn name(&self) -> &'static str;
    fn origin(&self) -> &'static str;
}

impl<T: ?Sized + 'static> Entry for Registration<T> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn origin(&self) -> &'static str {
        self.origin
    }
}

impl Entry for LossInfo {
    fn name(&self) -> &'static str {
        self.0.name
    }
    fn origin(&self) -> &'static str {
        self.0.origin
    }
}

/// A plugin kind: its human name and its checked, sorted entry list.
pub trait PluginKind: 'static {
    /// "strategy", "sampler" or "loss".
    const KIND: &'static str;
    /// Every registration of this kind, sorted by name; an error on duplicates or bad names.
    fn entries() -> Result<&'static [&'static Registration<Self>]>;
}

fn collect_checked<E: Entry + ?Sized + 'static>(
    kind: &'static str,
    iter: impl Iterator<Item = &'static E>,
) -> std::result::Result<Vec<&'static E>, String> {
    let mut all: Vec<&'static E> = iter.collect();
    all.sort_by(|a, b| a.name().cmp(b.name()).then(a.origin().cmp(b.origin())));
    for r in &all {
        if !is_kebab_case(r.name()) {
            return Err(Error::Invalid(format!(
                "{kind} name '{}' (registered by {}) is not kebab-case: use lowercase words joined by '-'",
                r.name(),
                r.origin()
            ))
            .to_string());
        }
    }
    for w in all.windows(2) {
        if w[0].name() == w[1].name() {
            return Err(Error::DuplicatePlugin {
                kind,
                name: w[0].name().to_string(),
                first: w[0].origin().to_string(),
                second: w[1].origin().to_string(),
            }
            .to_string());
        }
    }
    Ok(all)
}

macro_rules! impl_kind {
    ($t:ty, $kind:literal) => {
        impl PluginKind for $t {
            const KIND: &'static str = $kind;
            fn entries() -> Result<&'static [&'static Registration<Self>]> {
                static CELL: OnceLock<std::result::Result<Vec<&'static Registration<$t>>, String>> =
                    OnceLock::new();
                CELL.get_or_init(|| {
                    collect_checked($kind, inventory::iter::<Registration<$t>>.into_iter())
                })
                .as_deref()
                .map_err(|e| Error::Invalid(e.clone()))
            }
        }
    };
}
impl_kind!(dyn PairStrategy, "strategy");
impl_kind!(dyn NegativeSampler, "sampler");
#[cfg(feature = "torch")]
impl_kind!(dyn ContrastiveLoss, "loss");

/// The registration called `name`, or an error listing the valid names.
pub fn lookup<T: PluginKind + ?Sized>(name: &str) -> Result<&'static Registration<T>> {
    let entries = T::entries()?;
    entries
        .iter()
        .copied()
        .find(|r| r.name == name)
        .ok_or_else(|| Error::UnknownPlugin {
            kind: T::KIND,
            name: name.to_string(),
            valid: entries
                .iter()
                .map(|r| r.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Looks `name` up and builds it with `options` over its defaults: the one place where a
/// plugin name becomes an instance (the command line calls it for `--strategy`,
/// `--sampler` and `--loss`).
pub fn build<T: PluginKind + ?Sized>(name: &str, options: &Map<String, Value>) -> Result<Box<T>> {
    lookup::<T>(name)?.build_with(options)
}

/// The descriptions of every registration of kind `T`, sorted by name.
pub fn infos<T: PluginKind + ?Sized>() -> Result<Vec<PluginInfo>> {
    Ok(T::entries()?.iter().map(|r| r.info()).collect())
}

/// The descriptions of every registered loss, sorted by name, in every build (with or
/// without libtorch); checked like a registry (kebab-case, no duplicates).
pub fn loss_infos() -> Result<Vec<PluginInfo>> {
    static CELL: OnceLock<std::result::Result<Vec<&'static LossInfo>, String>> = OnceLock::new();
    CELL.get_or_init(|| collect_checked("loss", inventory::iter::<LossInfo>.into_iter()))
        .as_deref()
        .map(|all| all.iter().map(|l| l.0).collect())
        .map_err(|e| Error::Invalid(e.clone()))
}

/// `[a-z0-9]+(-[a-z0-9]+)*`
pub fn is_kebab_case(name: &str) -> bool {
    !name.is_empty()
        && name.split('-').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Deserializes a plugin config from `value` (a JSON object of overrides). Used by the
/// registration macros; an unknown key or a wrong type names the plugin and the known keys.
pub fn parse_config<C: DeserializeOwned + serde::Serialize + Default>(
    kind: &'static str,
    plugin: &str,
    value: &Value,
) -> Result<C> {
    let overrides = match value {
        Value::Null => return Ok(C::default()),
        Value::Object(m) => m,
        other => {
            return Err(Error::PluginConfig {
                kind,
                plugin: plugin.to_string(),
                message: format!("config must be a JSON object, got {other}"),
            })
        }
    };
    let mut merged = match serde_json::to_value(C::default()) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let known: Vec<String> = merged.keys().cloned().collect();
    for (k, v) in overrides {
        let key = k.replace('-', "_");
        if !merged.contains_key(&key) {
            let known = if known.is_empty() {
                "(this plugin has no options)".to_string()
            } else {
                known.join(", ")
            };
            return Err(Error::PluginConfig {
                kind,
                plugin: plugin.to_string(),
                message: format!("unknown option '{k}'; known options: {known}"),
            });
        }
        merged.insert(key, v.clone());
    }
    serde_json::from_value(Value::Object(merged)).map_err(|e| Error::PluginConfig {
        kind,
        plugin: plugin.to_string(),
        message: format!("bad option value: {e}"),
    })
}

/// Parses `key=value` option strings (`--loss-opt scale=20`) into a JSON object: a value
/// that parses as JSON (numbers, booleans, arrays) keeps that type, anything else is a string.
pub fn parse_options<'a>(pairs: impl IntoIterator<Item = &'a str>) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for p in pairs {
        let (k, v) = p.split_once('=').ok_or_else(|| {
            Error::Invalid(format!(
                "option '{p}' is not of the form key=value (e.g. scale=20)"
            ))
        })?;
        let value = serde_json::from_str::<Value>(v.trim())
            .unwrap_or_else(|_| Value::String(v.trim().to_string()));
        map.insert(k.trim().to_string(), value);
    }
    Ok(map)
}

/// Shared body of the `register_*!` macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __register_plugin {
    ($trait:path, $kind:literal, $name:literal, $summary:expr, $long:expr, $cfg:ty, $build:expr) => {
        const _: () = {
            fn __default_config() -> $crate::serde_json::Value {
                $crate::serde_json::to_value(<$cfg as ::core::default::Default>::default())
                    .unwrap_or($crate::serde_json::Value::Null)
            }
            fn __build(value: &$crate::serde_json::Value) -> $crate::Result<Box<dyn $trait>> {
                let cfg: $cfg = $crate::registry::parse_config($kind, $name, value)?;
                let build: fn($cfg) -> $crate::Result<Box<dyn $trait>> = $build;
                build(cfg)
            }
            $crate::inventory::submit! {
                $crate::registry::Registration::<dyn $trait> {
                    name: $name,
                    summary: $summary,
                    long_doc: $long,
                    origin: module_path!(),
                    default_config: __default_config,
                    build: __build,
                }
            }
        };
    };
}

/// Registers a [`PairStrategy`](crate::PairStrategy):
/// `register_strategy!(name: "baseline", summary: "...", long: "...", config: Cfg, build: |c| Ok(Box::new(S(c))));`
#[macro_export]
macro_rules! register_strategy {
    (name: $name:literal, summary: $s:expr, long: $l:expr, config: $cfg:ty, build: $b:expr $(,)?) => {
        $crate::__register_plugin!($crate::PairStrategy, "strategy", $name, $s, $l, $cfg, $b);
    };
}

/// Registers a [`NegativeSampler`](crate::NegativeSampler); same shape as `register_strategy!`.
#[macro_export]
macro_rules! register_sampler {
    (name: $name:literal, summary: $s:expr, long: $l:expr, config: $cfg:ty, build: $b:expr $(,)?) => {
        $crate::__register_plugin!($crate::NegativeSampler, "sampler", $name, $s, $l, $cfg, $b);
    };
}

/// Registers a loss; same shape as `register_strategy!`. Its description (a [`LossInfo`],
/// for `embtune list`) is registered in every build; the buildable registration of the
/// `ContrastiveLoss` only when core has its `torch` feature, so without it the `build`
/// expression is dropped unexpanded. A plugin crate therefore keeps the config type
/// torch-free and may put the tch implementation under its own `torch` feature, which must
/// enable `embtune-core/torch` (docs/PLUGINS.md).
#[macro_export]
macro_rules! register_loss {
    (name: $name:literal, summary: $s:expr, long: $l:expr, config: $cfg:ty, build: $b:expr $(,)?) => {
        const _: () = {
            fn __default_config() -> $crate::serde_json::Value {
                $crate::serde_json::to_value(<$cfg as ::core::default::Default>::default())
                    .unwrap_or($crate::serde_json::Value::Null)
            }
            $crate::inventory::submit! {
                $crate::registry::LossInfo($crate::registry::PluginInfo {
                    name: $name,
                    summary: $s,
                    long_doc: $l,
                    origin: module_path!(),
                    default_config: __default_config,
                })
            }
        };
        $crate::__register_loss_build!($name, $s, $l, $cfg, $b);
    };
}

/// The buildable half of `register_loss!`, in builds with core's `torch` feature. Defined
/// here (not behind a `cfg` in the macro's expansion) so that core's feature decides, not
/// the feature set of the crate that calls `register_loss!`.
#[cfg(feature = "torch")]
#[doc(hidden)]
#[macro_export]
macro_rules! __register_loss_build {
    ($name:literal, $s:expr, $l:expr, $cfg:ty, $b:expr) => {
        $crate::__register_plugin!($crate::ContrastiveLoss, "loss", $name, $s, $l, $cfg, $b);
    };
}

/// The buildable half of `register_loss!` in a build without libtorch: nothing.
#[cfg(not(feature = "torch"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __register_loss_build {
    ($($ignored:tt)*) => {};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kebab_case_rules() {
        assert!(is_kebab_case("same-category"));
        assert!(is_kebab_case("mnrl"));
        assert!(is_kebab_case("cached-mnrl2"));
        for bad in ["", "Same", "same_category", "-a", "a-", "a--b", "a b"] {
            assert!(!is_kebab_case(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn options_keep_json_types() {
        let m = parse_options([
            "scale=20",
            "symmetric=true",
            "name=hello world",
            "dims=[1,2]",
        ])
        .unwrap();
        assert_eq!(m["scale"], Value::from(20));
        assert_eq!(m["symmetric"], Value::Bool(true));
        assert_eq!(m["name"], Value::String("hello world".into()));
        assert_eq!(m["dims"], serde_json::json!([1, 2]));
        assert!(parse_options(["noequals"])
            .unwrap_err()
            .to_string()
            .contains("key=value"));
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    #[serde(default)]
    struct Cfg {
        scale: f64,
        symmetric: bool,
    }
    impl Default for Cfg {
        fn default() -> Self {
            Cfg {
                scale: 20.0,
                symmetric: false,
            }
        }
    }

    fn fake(name: &'static str, origin: &'static str) -> LossInfo {
        fn cfg() -> Value {
            Value::Null
        }
        LossInfo(PluginInfo {
            name,
            summary: "s",
            long_doc: "l",
            origin,
            default_config: cfg,
        })
    }

    #[test]
    fn duplicates_name_both_origins_and_bad_names_are_refused() {
        let a: &'static _ = Box::leak(Box::new(fake("mnrl", "crate_a::mnrl")));
        let b: &'static _ = Box::leak(Box::new(fake("mnrl", "crate_b::mine")));
        let c: &'static _ = Box::leak(Box::new(fake("triplet", "crate_a::triplet")));
        let e = collect_checked("loss", [c, b, a].into_iter()).unwrap_err();
        assert!(
            e.contains("duplicate loss name 'mnrl'")
                && e.contains("crate_a::mnrl")
                && e.contains("crate_b::mine"),
            "{e}"
        );
        let ok = collect_checked("loss", [c, a].into_iter()).unwrap();
        assert_eq!(
            ok.iter().map(|r| r.0.name).collect::<Vec<_>>(),
            ["mnrl", "triplet"]
        );
        let bad: &'static _ = Box::leak(Box::new(fake("My_Loss", "x")));
        assert!(collect_checked("loss", [bad].into_iter())
            .unwrap_err()
            .contains("not kebab-case"));
    }

    #[test]
    fn config_overrides_and_unknown_keys() {
        let c: Cfg = parse_config("loss", "x", &serde_json::json!({"scale": 30})).unwrap();
        assert_eq!(
            c,
            Cfg {
                scale: 30.0,
                symmetric: false
            }
        );
        let e = parse_config::<Cfg>("loss", "x", &serde_json::json!({"scael": 30}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown option 'scael'") && e.contains("scale") && e.contains("symmetric"),
            "{e}"
        );
        let e = parse_config::<Cfg>("loss", "x", &serde_json::json!({"scale": "big"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad option value"), "{e}");
    }
}
