//! The entry points of the fuzz targets (`fuzz/fuzz_targets/*.rs`, run with cargo-fuzz)
//! and of their corpus replay test (`tests/tests/fuzz_replay.rs`). Each takes arbitrary
//! bytes and must return without panicking, hanging or allocating without bound; an
//! `Err` from the code under test is a correct answer to bad input. Panics inside are the
//! findings (a fuzz target aborts on them; the replay test fails).
//!
//! A leading selector byte picks what the rest of the input is read as (an encoding, a
//! format, a loss's inputs, an architecture), so one target covers every path of its
//! reader.

use std::path::Path;

use crate::table::{InputFormat, ReadOptions, Table};

/// The fuzz targets, by name: the name of the folder of their seed corpus
/// (`fuzz/corpus/<name>/`) and of their file in `fuzz/fuzz_targets/`.
#[cfg(feature = "torch")]
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("table", table),
    ("csv_two_halves", csv_two_halves),
    ("training_data", training_data),
    ("safetensors", safetensors),
    ("model_config", model_config),
    ("plugin_options", plugin_options),
];

/// Encoding labels the table target reads with (None: UTF-8 without `--encoding`).
const ENCODINGS: &[Option<&str>] = &[
    None,
    Some("utf-8"),
    Some("cp949"),
    Some("euc-kr"),
    Some("utf-16le"),
    Some("utf-16be"),
    Some("cp1252"),
    Some("shift_jis"),
    Some("utf-8-sig"),
    Some("gbk"),
    Some("latin1"),
    Some("no-such-encoding"),
];

/// Splits off the selector byte (0 for an empty input).
fn selector(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&s, rest)) => (s, rest),
        None => (0, data),
    }
}

/// The table reader (`Table::from_bytes`): selector → encoding label and format (CSV,
/// JSON Lines, or by the `.csv` extension); byte-order marks, quoting, multi-line cells,
/// duplicate headers and every error path are reached by the bytes.
pub fn table(data: &[u8]) {
    let (s, rest) = selector(data);
    let encoding = ENCODINGS[s as usize % ENCODINGS.len()];
    let format = match (s as usize / ENCODINGS.len()) % 3 {
        0 => None,
        1 => Some(InputFormat::Csv),
        _ => Some(InputFormat::Jsonl),
    };
    let options = ReadOptions { format, encoding };
    if let Ok(t) = Table::from_bytes(rest.to_vec(), &options, Path::new("fuzz.csv")) {
        // Every cell and line number is reachable.
        for r in 0..t.n_rows() {
            for c in 0..t.headers().len() {
                let _ = t.cell(r, c).len();
            }
            let _ = t.line(r);
        }
    }
}

/// The CSV parser's two-halves parallel parse against the single pass: selector → where
/// the split is forced (the data records' byte count above which it splits); both must
/// give the same table, or the same error.
pub fn csv_two_halves(data: &[u8]) {
    let (s, rest) = selector(data);
    let text = String::from_utf8_lossy(rest).into_owned();
    let path = Path::new("fuzz.csv");
    let one = Table::parse_csv_split_at(text.clone(), usize::MAX, path);
    let two = Table::parse_csv_split_at(text, 1 + s as usize % 64, path);
    match (one, two) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.headers(), b.headers(), "headers differ");
            assert_eq!(a.n_rows(), b.n_rows(), "row counts differ");
            for r in 0..a.n_rows() {
                assert_eq!(a.line(r), b.line(r), "line of row {r} differs");
                for c in 0..a.headers().len() {
                    assert_eq!(a.cell(r, c), b.cell(r, c), "cell ({r}, {c}) differs");
                }
            }
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "errors differ"),
        (a, b) => panic!(
            "single pass {:?} vs two halves {:?}",
            a.map(|t| t.n_rows()),
            b.map(|t| t.n_rows())
        ),
    }
}

/// The training-data reader: the table (CSV or JSON Lines by the selector), then
/// `Dataset::from_table` (label and score-list columns) and `prepare_for` every kind of
/// loss input.
#[cfg(feature = "torch")]
pub fn training_data(data: &[u8]) {
    use crate::loss::LossInputs;
    use crate::table::Dataset;
    let (s, rest) = selector(data);
    let (format, name) = if s % 2 == 0 {
        (InputFormat::Csv, "train.csv")
    } else {
        (InputFormat::Jsonl, "train.jsonl")
    };
    let options = ReadOptions {
        format: Some(format),
        encoding: None,
    };
    let path = Path::new(name);
    let Ok(table) = Table::from_bytes(rest.to_vec(), &options, path) else {
        return;
    };
    let Ok(ds) = Dataset::from_table(&table, path) else {
        return;
    };
    let inputs = [
        LossInputs::SingleTextTwice,
        LossInputs::Texts { min: 2, max: None },
        LossInputs::Texts {
            min: 3,
            max: Some(3),
        },
        LossInputs::ScoredPairs {
            positive_label: 1.0,
            negative_label: 0.0,
        },
        LossInputs::TextsWithScores {
            min: 3,
            max: None,
            margins: false,
        },
        LossInputs::TextsWithScores {
            min: 3,
            max: Some(3),
            margins: true,
        },
    ];
    let inputs = &inputs[(s as usize / 2) % inputs.len()];
    if let Ok(d) = ds.prepare_for(inputs, "fuzz") {
        let _ = d.len();
    }
}

/// The safetensors reader (`encoder::safetensors::from_bytes`): header length, JSON
/// header, dtypes, shapes and offsets.
#[cfg(feature = "torch")]
pub fn safetensors(data: &[u8]) {
    let _ = crate::encoder::safetensors::from_bytes(data, Path::new("fuzz"), "model.safetensors");
}

/// The folder's JSON readers: selector → `config.json` for one of the backbones (parsed,
/// checked and built against an empty checkpoint, so every check before the first weight
/// runs), `modules.json`, `tokenizer_config.json`'s padding side, or the Pooling module's
/// `config.json`.
#[cfg(feature = "torch")]
pub fn model_config(data: &[u8]) {
    use crate::models::{params::Checkpoint, params::ParamTable, BACKBONES};
    let (s, rest) = selector(data);
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    let dir = Path::new("fuzz");
    let n = BACKBONES.len() + 3;
    match s as usize % n {
        i if i < BACKBONES.len() => {
            let mut ckpt = Checkpoint::new(dir, "model.safetensors", Default::default());
            let mut params = ParamTable::new(tch::Device::Cpu);
            let _ = (BACKBONES[i].1)(dir, &v, &mut ckpt, &mut params);
        }
        i if i == BACKBONES.len() => {
            let _ = crate::encoder::folder::parse_modules(v, dir);
        }
        i if i == BACKBONES.len() + 1 => {
            let _ = crate::encoder::tokenize::padding_side_of(&v, dir);
        }
        _ => {
            let _ = crate::encoder::pooling::Pooling::from_config(dir, &v);
        }
    }
}

/// `--loss-opt`, `--sampler-opt` and `--strategy-opt`: the input's lines as `key=value`
/// options (`parse_options`), then every registered loss, sampler and strategy built from
/// them (each checks its options). Link the plugins first (`embtune_plugins::link()`).
#[cfg(feature = "torch")]
pub fn plugin_options(data: &[u8]) {
    use crate::registry::{self, parse_options, PluginKind};
    let text = String::from_utf8_lossy(data);
    let Ok(options) = parse_options(text.lines()) else {
        return;
    };
    fn build_all<T: PluginKind + ?Sized>(options: &serde_json::Map<String, serde_json::Value>) {
        if let Ok(entries) = T::entries() {
            for r in entries {
                let _ = r.build_with(options);
            }
        }
    }
    build_all::<dyn crate::loss::ContrastiveLoss>(&options);
    build_all::<dyn crate::sampler::NegativeSampler>(&options);
    build_all::<dyn crate::strategy::PairStrategy>(&options);
    let _ = registry::loss_infos();
}
