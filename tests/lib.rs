//! Cross-crate tests live in `tests/tests/`; this library holds the helpers several of them
//! share.

use std::path::{Path, PathBuf};

#[path = "loss_cases.rs"]
pub mod loss_cases;
#[path = "train_cases.rs"]
pub mod train_cases;

/// The default model folder, verified; panics with the provisioning command when it is
/// missing (these tests need it).
pub fn default_model() -> PathBuf {
    let dir = embtune_core::default_model::default_model_dir();
    embtune_core::default_model::verify_default_model(&dir).unwrap_or_else(|e| {
        panic!("{e} (these tests need the default model: run scripts/fetch-model.sh)")
    });
    dir
}

/// Copies folder `from` to `to` recursively (creating `to`), skipping the top-level entries
/// named in `skip`; panics on an I/O error (a test helper).
pub fn copy_dir_except(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if skip.iter().any(|s| e.file_name() == *s) {
            continue;
        }
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir_except(&e.path(), &dst, &[]);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// Copies folder `from` to `to` recursively ([`copy_dir_except`] skipping nothing).
pub fn copy_dir(from: &Path, to: &Path) {
    copy_dir_except(from, to, &[]);
}

/// A float32 `.npy` matrix as (row-major data, rows, cols), read by tch.
pub fn read_npy(path: &Path) -> Result<(Vec<f32>, usize, usize), tch::TchError> {
    let t = tch::Tensor::read_npy(path)?;
    let (rows, cols) = t.size2()?;
    Ok((
        Vec::<f32>::try_from(t.view([-1]))?,
        rows as usize,
        cols as usize,
    ))
}

/// The test runner of the `harness = false` test binaries (dist_launch, install_layout,
/// crash_safety: they run their own executable as the CLI, so they have their own `main`).
/// Runs the `(name, test)` pairs whose name contains one of the command line's filters (all
/// of them without filters; libtest's flags and their values are skipped), prints libtest's
/// `test NAME ... ok` lines and its closing "test result: ..." line (which
/// scripts/test-summary.sh counts), and fails when a test panicked.
pub fn run_named_tests(tests: &[(&str, fn())]) -> std::process::ExitCode {
    const FLAGS_WITH_VALUE: [&str; 6] = [
        "--test-threads",
        "--skip",
        "--format",
        "--color",
        "--logfile",
        "-Z",
    ];
    let mut filters: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if FLAGS_WITH_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            filters.push(a);
        }
    }
    let (mut passed, mut failed, mut filtered) = (0, 0, 0);
    for (name, test) in tests {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            filtered += 1;
            continue;
        }
        let ok = std::panic::catch_unwind(test).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    println!(
        "test result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; {filtered} filtered out",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
