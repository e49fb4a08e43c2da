//! The fuzz targets (fuzz/fuzz_targets/, embtune_core::fuzzing) without cargo-fuzz: every
//! seed of fuzz/corpus/<target>/ and every saved finding of fuzz/regressions/<target>/
//! replayed, then each target run briefly on seeded mutations of its seeds (bit flips,
//! byte changes, insertions, deletions, duplications and splices, as libFuzzer's
//! mutators do). A panic anywhere is a failure naming the target and the input, which is
//! written to the temp folder for `cargo fuzz run <target> <file>`.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Mutated inputs run per target (on top of the corpus).
const MUTATIONS: usize = 3000;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_file() {
                out.push((
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// One libFuzzer-style mutation of `data`, with `other` (another seed) for splices.
fn mutate(rng: &mut ChaCha8Rng, data: &mut Vec<u8>, other: &[u8]) {
    const INTERESTING: &[u8] = b"\0\x01\x7f\x80\xff\"\\,\n\r{}[]:=-.0123456789eE";
    let n = data.len();
    match rng.gen_range(0..7) {
        0 if n > 0 => {
            let i = rng.gen_range(0..n);
            data[i] ^= 1 << rng.gen_range(0..8);
        }
        1 if n > 0 => {
            let i = rng.gen_range(0..n);
            data[i] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
        }
        2 => {
            let i = rng.gen_range(0..=n);
            let k = rng.gen_range(1..8);
            for _ in 0..k {
                data.insert(i, rng.gen());
            }
        }
        3 if n > 0 => {
            let i = rng.gen_range(0..n);
            let k = rng.gen_range(1..=(n - i).min(16));
            data.drain(i..i + k);
        }
        4 if n > 0 => {
            let i = rng.gen_range(0..n);
            let k = rng.gen_range(1..=(n - i).min(64));
            let piece = data[i..i + k].to_vec();
            let at = rng.gen_range(0..=n);
            data.splice(at..at, piece);
        }
        5 if !other.is_empty() => {
            let cut = rng.gen_range(0..=n);
            let from = rng.gen_range(0..other.len());
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        _ if n > 0 => {
            // A number-looking run: large values, signs, exponents.
            let i = rng.gen_range(0..n);
            let s = [
                "-1",
                "0",
                "4294967296",
                "1e308",
                "-0",
                "99999999999999999999",
                "NaN",
            ][rng.gen_range(0..7)];
            data.splice(i..i, s.bytes());
        }
        _ => data.push(rng.gen()),
    }
}

fn run_one(name: &str, target: fn(&[u8]), what: &str, data: &[u8]) -> Result<(), String> {
    match std::panic::catch_unwind(|| target(data)) {
        Ok(()) => Ok(()),
        Err(_) => {
            let file = std::env::temp_dir().join(format!("embtune-fuzz-{name}-finding"));
            let _ = std::fs::write(&file, data);
            Err(format!(
                "fuzz target {name} panicked on {what} (saved to {})",
                file.display()
            ))
        }
    }
}

#[test]
fn every_fuzz_target_survives_its_corpus_findings_and_mutations() {
    embtune_plugins::link();
    let mut failures = Vec::new();
    for &(name, target) in embtune_core::fuzzing::TARGETS {
        let seeds = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(!seeds.is_empty(), "fuzz/corpus/{name}/ has no seeds");
        let findings = inputs(&fuzz_dir().join("regressions").join(name));
        for (file, data) in seeds.iter().chain(&findings) {
            if let Err(e) = run_one(name, target, file, data) {
                failures.push(e);
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed ^ name.len() as u64);
        for k in 0..MUTATIONS {
            let (_, base) = &seeds[rng.gen_range(0..seeds.len())];
            let (_, other) = &seeds[rng.gen_range(0..seeds.len())];
            let mut data = base.clone();
            for _ in 0..rng.gen_range(1..5) {
                mutate(&mut rng, &mut data, other);
            }
            if let Err(e) = run_one(name, target, &format!("mutation {k}"), &data) {
                failures.push(e);
                break;
            }
        }
        eprintln!(
            "{name}: {} seeds, {} findings, {MUTATIONS} mutations",
            seeds.len(),
            findings.len()
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_panicking_target_is_reported_with_its_input_saved() {
    fn boom(data: &[u8]) {
        assert!(data.len() < 3, "too long");
    }
    assert!(run_one("boom", boom, "short", b"ab").is_ok());
    let e = run_one("boom", boom, "long", b"abcd").unwrap_err();
    assert!(e.contains("fuzz target boom panicked on long"), "{e}");
    let saved = std::env::temp_dir().join("embtune-fuzz-boom-finding");
    assert_eq!(std::fs::read(saved).unwrap(), b"abcd");
}
