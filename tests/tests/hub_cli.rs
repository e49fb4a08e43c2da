//! `embtune encode --model someone/tiny` end to end: the CLI reads HF_HUB_CACHE and
//! HF_HUB_OFFLINE from the environment and encodes with the cached snapshot. The only test
//! of this binary, so setting the environment races with nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use embtune_tests::read_npy;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn gemma_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("encoder")
        .join("gemma3-tiny")
}

fn run(args: &[&str]) -> ExitCode {
    let mut v = vec!["embtune"];
    v.extend_from_slice(args);
    embtune::run_from(v)
}

#[test]
fn encode_takes_a_hugging_face_id_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let repo = cache.join("models--someone--tiny");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    // A snapshot folder may hold the files themselves (huggingface_hub's copy mode).
    std::os::unix::fs::symlink(gemma_dir(), repo.join("snapshots").join(COMMIT)).unwrap();
    std::env::set_var("HF_HUB_CACHE", &cache);
    std::env::set_var("HF_HUB_OFFLINE", "1");

    let input = tmp.path().join("in.txt");
    std::fs::write(&input, "one\ntwo\n").unwrap();
    let encode = |model: &str, out: &Path| {
        run(&[
            "encode",
            "--model",
            model,
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--device",
            "cpu",
            "--quiet",
        ])
    };
    let by_id = tmp.path().join("by_id.npy");
    let by_dir = tmp.path().join("by_dir.npy");
    assert_eq!(encode("someone/tiny", &by_id), ExitCode::SUCCESS);
    assert_eq!(
        encode(gemma_dir().to_str().unwrap(), &by_dir),
        ExitCode::SUCCESS
    );
    let (a, rows, _) = read_npy(&by_id).unwrap();
    assert_eq!(rows, 2);
    assert_eq!(a, read_npy(&by_dir).unwrap().0);

    // Not cached and offline: a clean failure, no output written.
    let out = tmp.path().join("absent.npy");
    assert_ne!(encode("nobody/absent", &out), ExitCode::SUCCESS);
    assert!(!out.exists());
}
