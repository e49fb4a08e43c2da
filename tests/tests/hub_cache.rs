//! `--model owner/name` resolved offline from a Hugging Face cache laid out as
//! huggingface_hub lays it (refs/{revision} → snapshots/{commit}/{file} → ../../blobs/{etag}),
//! built here in a temporary folder from the tiny Gemma fixture. Every test passes its own
//! [`HubConfig`], so none touches the process environment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use embtune_core::default_model::sha256_hex;
use embtune_core::encoder::SentenceEncoder;
use embtune_core::hub::{resolve_model, HubConfig};
use tch::Device;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const OLD_COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";

fn gemma_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("encoder")
        .join("gemma3-tiny")
}

/// Every file under `dir`, as paths relative to it with `/` separators.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_str().unwrap();
                out.push(rel.replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

/// Lays out `models--{owner}--{name}` in `cache` with the fixture's files (less `skip`)
/// as snapshot `commit`, and `refs/{rev}` → commit for each of `refs`.
fn add_snapshot(cache: &Path, repo: &str, commit: &str, refs: &[&str], skip: &[&str]) {
    let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    let blobs = repo_dir.join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let src = gemma_dir();
    for rel in files_under(&src) {
        if skip.contains(&rel.as_str()) {
            continue;
        }
        let bytes = std::fs::read(src.join(&rel)).unwrap();
        let etag = sha256_hex(&bytes);
        std::fs::write(blobs.join(&etag), &bytes).unwrap();
        let pointer = repo_dir.join("snapshots").join(commit).join(&rel);
        std::fs::create_dir_all(pointer.parent().unwrap()).unwrap();
        let up = "../".repeat(2 + rel.matches('/').count());
        std::os::unix::fs::symlink(format!("{up}blobs/{etag}"), &pointer).unwrap();
    }
    for r in refs {
        let f = repo_dir.join("refs").join(r);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, commit).unwrap();
    }
}

fn vars(pairs: Vec<(&'static str, OsString)>) -> impl Fn(&str) -> Option<OsString> {
    move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
}

fn offline_at(cache: &Path) -> HubConfig {
    HubConfig::from_vars(vars(vec![
        ("HF_HUB_CACHE", cache.into()),
        ("HF_HUB_OFFLINE", "1".into()),
    ]))
}

#[test]
fn an_id_resolves_to_its_snapshot_through_hf_hub_cache_and_loads() {
    let tmp = tempfile::tempdir().unwrap();
    add_snapshot(tmp.path(), "someone/tiny", COMMIT, &["main"], &[]);
    let cfg = offline_at(tmp.path());
    assert_eq!(cfg.cache_from, "HF_HUB_CACHE");
    let dir = resolve_model(Path::new("someone/tiny"), &cfg).unwrap();
    assert_eq!(
        dir,
        tmp.path()
            .join("models--someone--tiny/snapshots")
            .join(COMMIT)
    );
    let got = SentenceEncoder::load(&dir, Device::Cpu)
        .unwrap()
        .encode(&["a cached model"], 4)
        .unwrap();
    let want = SentenceEncoder::load(&gemma_dir(), Device::Cpu)
        .unwrap()
        .encode(&["a cached model"], 4)
        .unwrap();
    assert_eq!(
        Vec::<f32>::try_from(got.view([-1])).unwrap(),
        Vec::<f32>::try_from(want.view([-1])).unwrap()
    );
}

#[test]
fn hf_home_places_the_cache_in_its_hub_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    add_snapshot(&cache, "tiny", COMMIT, &["main"], &[]);
    let cfg = HubConfig::from_vars(vars(vec![
        ("HF_HOME", tmp.path().into()),
        ("HF_HUB_OFFLINE", "1".into()),
    ]));
    assert_eq!(cfg.cache, cache);
    let dir = resolve_model(Path::new("tiny"), &cfg).unwrap();
    assert_eq!(dir, cache.join("models--tiny/snapshots").join(COMMIT));
}

#[test]
fn revisions_by_ref_and_by_commit_hash() {
    let tmp = tempfile::tempdir().unwrap();
    add_snapshot(tmp.path(), "someone/tiny", COMMIT, &["main"], &[]);
    add_snapshot(
        tmp.path(),
        "someone/tiny",
        OLD_COMMIT,
        &["v1", "refs/pr/3"],
        &[],
    );
    let cfg = offline_at(tmp.path());
    let snaps = tmp.path().join("models--someone--tiny/snapshots");
    let at = |spec: &str| resolve_model(Path::new(spec), &cfg);
    assert_eq!(at("someone/tiny@v1").unwrap(), snaps.join(OLD_COMMIT));
    assert_eq!(
        at("someone/tiny@refs/pr/3").unwrap(),
        snaps.join(OLD_COMMIT)
    );
    assert_eq!(
        at(&format!("someone/tiny@{OLD_COMMIT}")).unwrap(),
        snaps.join(OLD_COMMIT)
    );
    assert_eq!(
        at(&format!("someone/tiny@{COMMIT}")).unwrap(),
        snaps.join(COMMIT)
    );
    let absent = "1111111111111111111111111111111111111111";
    let e = at(&format!("someone/tiny@{absent}"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("HF_HUB_OFFLINE") && e.contains(&format!("--revision {absent}")),
        "{e}"
    );
    let e = at("someone/tiny@v2").unwrap_err().to_string();
    assert!(e.contains("refs/v2"), "{e}");
}

#[test]
fn an_incomplete_snapshot_counts_as_missing_and_says_what_it_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    add_snapshot(
        tmp.path(),
        "someone/partial",
        COMMIT,
        &["main"],
        &["model.safetensors", "2_Dense/model.safetensors"],
    );
    let e = resolve_model(Path::new("someone/partial"), &offline_at(tmp.path()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lacks 2_Dense/model.safetensors, model.safetensors"),
        "{e}"
    );
    assert!(!e.contains('\n'));
}

#[test]
fn offline_and_not_cached_is_one_line_with_the_paths_and_the_fixes() {
    let tmp = tempfile::tempdir().unwrap();
    let e = resolve_model(Path::new("BAAI/bge-m3"), &offline_at(tmp.path()))
        .unwrap_err()
        .to_string();
    let repo = tmp.path().join("models--BAAI--bge-m3");
    for want in [
        "BAAI/bge-m3",
        &repo.join("refs/main").display().to_string(),
        &repo.join("snapshots").display().to_string(),
        "from HF_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "huggingface-cli download BAAI/bge-m3",
        "--model FOLDER",
    ] {
        assert!(e.contains(want), "missing {want:?} in: {e}");
    }
    assert!(!e.contains('\n'));
}

#[test]
fn an_existing_folder_wins_over_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = offline_at(tmp.path());
    let dir = gemma_dir();
    assert_eq!(resolve_model(&dir, &cfg).unwrap(), dir);
}
