//! Downloading a model by id into the Hugging Face cache, against a small hub served on
//! loopback by this test: the API's file list, `resolve/` with huggingface's headers
//! (X-Repo-Commit, ETag, and for weights a redirect carrying X-Linked-Etag/X-Linked-Size as
//! LFS files get), a gated model behind a token, an unknown id, corrupt content and an
//! unreachable endpoint. Each test passes its own [`HubConfig`]; none reads the environment.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use embtune_core::default_model::sha256_hex;
use embtune_core::encoder::SentenceEncoder;
use embtune_core::hub::{resolve_model, HubConfig};
use tch::Device;

const COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";
const TOKEN: &str = "hf_test_token";

fn gemma_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("encoder")
        .join("gemma3-tiny")
}

/// The fixture's files by relative path, plus files a hub repo has that embtune must not
/// fetch (other weight formats, an ONNX export, the README).
fn repo_files() -> BTreeMap<String, Vec<u8>> {
    let root = gemma_dir();
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(&root).unwrap().to_str().unwrap().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    for extra in [
        "pytorch_model.bin",
        "README.md",
        "onnx/model.onnx",
        ".gitattributes",
    ] {
        out.insert(extra.to_string(), b"not for embtune".to_vec());
    }
    out
}

/// A hub on 127.0.0.1 serving `someone/tiny`, `someone/gated` (401 without the token) and
/// `someone/corrupt` (weights whose bytes do not match their etag); anything else is 404.
/// Returns the endpoint and the log of request lines it answered.
fn serve() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let files = Arc::new(repo_files());
    let seen = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (files, seen) = (files.clone(), seen.clone());
            std::thread::spawn(move || answer(stream, &files, &seen));
        }
    });
    (endpoint, log)
}

fn answer(mut stream: TcpStream, files: &BTreeMap<String, Vec<u8>>, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    let mut auth = None;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    log.lock().unwrap().push(format!("{method} {path}"));
    let authorized = auth.as_deref() == Some(&format!("Bearer {TOKEN}"));
    let (status, headers, body) = route(path, authorized, files);
    let reason = match status {
        200 => "OK",
        302 => "Found",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    if method != "HEAD" {
        let _ = stream.write_all(&body);
    }
}

type Answer = (u16, Vec<(&'static str, String)>, Vec<u8>);

fn route(path: &str, authorized: bool, files: &BTreeMap<String, Vec<u8>>) -> Answer {
    let not_found = (404, vec![], b"Not Found".to_vec());
    let gated: Answer = (
        401,
        vec![("X-Error-Code", "GatedRepo".to_string())],
        b"Access to model someone/gated is restricted".to_vec(),
    );
    let repos = ["someone/tiny", "someone/gated", "someone/corrupt"];
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some(repo) = repos.iter().find(|r| rest == format!("{r}/revision/main")) else {
            return not_found;
        };
        if *repo == "someone/gated" && !authorized {
            return gated;
        }
        let siblings: Vec<String> = files
            .keys()
            .map(|f| format!("{{\"rfilename\":\"{f}\"}}"))
            .collect();
        let body = format!(
            "{{\"id\":\"{repo}\",\"sha\":\"{COMMIT}\",\"siblings\":[{}]}}",
            siblings.join(",")
        );
        return (200, vec![], body.into_bytes());
    }
    if let Some(sha) = path.strip_prefix("/lfs/") {
        // The "CDN" a weights redirect points at; someone/corrupt's weights are truncated.
        let (sha, corrupt) = match sha.strip_suffix("-corrupt") {
            Some(s) => (s, true),
            None => (sha, false),
        };
        let Some(bytes) = files.values().find(|b| sha256_hex(b) == sha) else {
            return not_found;
        };
        let mut bytes = bytes.clone();
        if corrupt {
            let n = bytes.len();
            bytes[n / 2] ^= 0xff;
        }
        return (200, vec![], bytes);
    }
    for repo in repos {
        let Some(file) = path.strip_prefix(&format!("/{repo}/resolve/{COMMIT}/")) else {
            continue;
        };
        if repo == "someone/gated" && !authorized {
            return gated;
        }
        let Some(bytes) = files.get(file) else {
            return (
                404,
                vec![("X-Error-Code", "EntryNotFound".to_string())],
                vec![],
            );
        };
        let commit = ("X-Repo-Commit", COMMIT.to_string());
        if file.ends_with(".safetensors") {
            let sha = sha256_hex(bytes);
            let suffix = if repo == "someone/corrupt" {
                "-corrupt"
            } else {
                ""
            };
            let headers = vec![
                commit,
                ("X-Linked-Etag", format!("\"{sha}\"")),
                ("X-Linked-Size", bytes.len().to_string()),
                ("Location", format!("/lfs/{sha}{suffix}")),
            ];
            return (302, headers, vec![]);
        }
        let etag = format!("\"{}\"", &sha256_hex(bytes)[..40]);
        return (200, vec![commit, ("ETag", etag)], bytes.clone());
    }
    not_found
}

fn config(cache: &Path, endpoint: &str) -> HubConfig {
    HubConfig {
        endpoint: endpoint.to_string(),
        cache_from: "HF_HUB_CACHE".into(),
        ..HubConfig::new(cache)
    }
}

fn embed(dir: &Path) -> Vec<f32> {
    let t = SentenceEncoder::load(dir, Device::Cpu)
        .unwrap()
        .encode(&["downloaded", "from a hub"], 4)
        .unwrap();
    Vec::<f32>::try_from(t.view([-1])).unwrap()
}

#[test]
fn download_lands_in_the_cache_layout_and_then_resolves_offline() {
    let (endpoint, log) = serve();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &endpoint);
    let dir = resolve_model(Path::new("someone/tiny"), &cfg).unwrap();
    let repo = tmp.path().join("models--someone--tiny");
    assert_eq!(dir, repo.join("snapshots").join(COMMIT));
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );

    // Every file the encoder reads is a relative symlink to blobs/{etag}; the weights' etag
    // is their sha256 (LFS), and nothing half-written is left.
    let weights = std::fs::read_link(dir.join("model.safetensors")).unwrap();
    let bytes = std::fs::read(gemma_dir().join("model.safetensors")).unwrap();
    assert_eq!(weights, Path::new("../../blobs").join(sha256_hex(&bytes)));
    let dense = std::fs::read_link(dir.join("2_Dense/model.safetensors")).unwrap();
    assert!(dense.starts_with("../../../blobs"), "{}", dense.display());
    for f in [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "1_Pooling/config.json",
    ] {
        assert!(
            std::fs::symlink_metadata(dir.join(f))
                .unwrap()
                .file_type()
                .is_symlink(),
            "{f}"
        );
    }
    for b in std::fs::read_dir(repo.join("blobs")).unwrap() {
        let name = b.unwrap().file_name().into_string().unwrap();
        assert!(!name.ends_with(".incomplete"), "{name}");
    }
    for skipped in ["pytorch_model.bin", "README.md", "onnx", ".gitattributes"] {
        assert!(!dir.join(skipped).exists(), "{skipped} was fetched");
    }
    assert_eq!(embed(&dir), embed(&gemma_dir()));

    // Cached now: no request at all, online or offline (with a dead endpoint).
    let before = log.lock().unwrap().len();
    assert_eq!(resolve_model(Path::new("someone/tiny"), &cfg).unwrap(), dir);
    let offline = HubConfig {
        offline: true,
        endpoint: "http://127.0.0.1:9".into(),
        ..cfg.clone()
    };
    assert_eq!(
        resolve_model(Path::new("someone/tiny"), &offline).unwrap(),
        dir
    );
    assert_eq!(log.lock().unwrap().len(), before);
}

#[test]
fn a_gated_model_needs_the_token() {
    let (endpoint, _) = serve();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &endpoint);
    let e = resolve_model(Path::new("someone/gated"), &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("gated") && e.contains("set HF_TOKEN") && e.contains(&endpoint),
        "{e}"
    );
    assert!(!e.contains('\n'));
    let wrong = HubConfig {
        token: Some("hf_wrong".into()),
        ..cfg.clone()
    };
    let e = resolve_model(Path::new("someone/gated"), &wrong)
        .unwrap_err()
        .to_string();
    assert!(e.contains("refused the token"), "{e}");
    let with_token = HubConfig {
        token: Some(TOKEN.into()),
        ..cfg
    };
    let dir = resolve_model(Path::new("someone/gated"), &with_token).unwrap();
    assert_eq!(embed(&dir), embed(&gemma_dir()));
}

#[test]
fn an_unknown_id_says_it_does_not_exist_on_the_endpoint() {
    let (endpoint, _) = serve();
    let tmp = tempfile::tempdir().unwrap();
    let e = resolve_model(Path::new("nobody/absent"), &config(tmp.path(), &endpoint))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nobody/absent") && e.contains(&format!("does not exist on {endpoint}")),
        "{e}"
    );
    assert!(!tmp.path().join("models--nobody--absent/snapshots").exists());
}

#[test]
fn corrupt_content_is_refused_and_leaves_no_blob() {
    let (endpoint, _) = serve();
    let tmp = tempfile::tempdir().unwrap();
    let e = resolve_model(Path::new("someone/corrupt"), &config(tmp.path(), &endpoint))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sha256") && e.contains("run the command again"),
        "{e}"
    );
    let blobs = tmp.path().join("models--someone--corrupt/blobs");
    for (file, bytes) in repo_files() {
        if file.ends_with(".safetensors") {
            let etag = sha256_hex(&bytes);
            assert!(!blobs.join(&etag).exists(), "{file}");
            assert!(!blobs.join(format!("{etag}.incomplete")).exists(), "{file}");
        }
    }
    assert!(!tmp
        .path()
        .join("models--someone--corrupt/refs/main")
        .exists());
}

#[test]
fn unreachable_or_offline_and_not_cached_name_the_cache_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    // A port nothing listens on: bind one, note it, close it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("http://127.0.0.1:{port}");
    let e = resolve_model(Path::new("someone/tiny"), &config(tmp.path(), &dead))
        .unwrap_err()
        .to_string();
    let repo = tmp.path().join("models--someone--tiny");
    assert!(e.contains(&format!("{dead} cannot be reached")), "{e}");
    assert!(
        e.contains(&repo.join("refs/main").display().to_string()),
        "{e}"
    );
    assert!(e.contains("huggingface-cli download someone/tiny"), "{e}");
    assert!(!e.contains('\n'));

    let offline = HubConfig {
        offline: true,
        ..config(tmp.path(), &dead)
    };
    let e = resolve_model(Path::new("someone/tiny"), &offline)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("HF_HUB_OFFLINE") && e.contains("huggingface-cli download"),
        "{e}"
    );
}
