//! Models by Hugging Face id: `--model BAAI/bge-m3[@revision]` resolves to a snapshot
//! folder of the Hugging Face cache (the one huggingface_hub, transformers and
//! sentence-transformers share), downloading the files a sentence encoder needs first
//! when the snapshot is not there (feature `hub`).
//!
//! The cache folder and the environment variables follow huggingface_hub's
//! `constants.py`; the layout follows its `file_download.py`:
//! `{cache}/models--{owner}--{name}/refs/{revision}` holds a commit hash,
//! `snapshots/{commit}/{file}` are relative symlinks to `blobs/{etag}`, and a blob being
//! written is `blobs/{etag}.incomplete` until it is complete.
//!
//! Only the CLI reads the environment ([`HubConfig::from_env`]); the resolver takes a
//! [`HubConfig`], so tests run side by side without touching process-wide state.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The hub huggingface_hub talks to when `HF_ENDPOINT` is unset.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The revision of an id without `@revision`.
pub const DEFAULT_REVISION: &str = "main";

/// Where models are looked up and downloaded to, and how the hub is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// The hub cache folder, holding `models--{owner}--{name}/`.
    pub cache: PathBuf,
    /// Which setting chose `cache`, for messages: `HF_HUB_CACHE`, `HF_HOME`, ...
    pub cache_from: String,
    /// The hub's base URL, without a trailing slash.
    pub endpoint: String,
    /// Sent as `Authorization: Bearer` (gated and private models).
    pub token: Option<String>,
    /// Never touch the network (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
}

impl HubConfig {
    /// A configuration with `cache`, the default endpoint, no token, online.
    pub fn new(cache: impl Into<PathBuf>) -> Self {
        HubConfig {
            cache: cache.into(),
            cache_from: "given".into(),
            endpoint: DEFAULT_ENDPOINT.into(),
            token: None,
            offline: false,
        }
    }

    /// The configuration huggingface_hub would use in this process's environment.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var_os(k))
    }

    /// The configuration from environment variables read through `var` (as
    /// huggingface_hub's `constants.py`): cache `$HF_HUB_CACHE`, else
    /// `$HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`,
    /// else `~/.cache/huggingface/hub`; endpoint `$HF_ENDPOINT`; token `$HF_TOKEN`, else the
    /// file `$HF_TOKEN_PATH`, else `$HF_HOME/token`; offline when `$HF_HUB_OFFLINE` (or
    /// `$TRANSFORMERS_OFFLINE`) is 1, ON, YES or TRUE. Empty variables count as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Self {
        let get = |k: &str| var(k).filter(|v| !v.is_empty());
        let home = get("HOME").map(PathBuf::from).unwrap_or_else(|| ".".into());
        let expand = |v: OsString| -> PathBuf {
            match v.to_str() {
                Some("~") => home.clone(),
                Some(s) if s.starts_with("~/") => home.join(&s[2..]),
                _ => PathBuf::from(v),
            }
        };
        let (hf_home, home_from) = match (get("HF_HOME"), get("XDG_CACHE_HOME")) {
            (Some(h), _) => (expand(h), "HF_HOME"),
            (None, Some(x)) => (expand(x).join("huggingface"), "XDG_CACHE_HOME"),
            (None, None) => (home.join(".cache").join("huggingface"), "the default"),
        };
        let (cache, cache_from) = match (get("HF_HUB_CACHE"), get("HUGGINGFACE_HUB_CACHE")) {
            (Some(c), _) => (expand(c), "HF_HUB_CACHE".to_string()),
            (None, Some(c)) => (expand(c), "HUGGINGFACE_HUB_CACHE".to_string()),
            (None, None) => (hf_home.join("hub"), home_from.to_string()),
        };
        let endpoint = get("HF_ENDPOINT")
            .map(|e| e.to_string_lossy().trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
        let offline = get("HF_HUB_OFFLINE")
            .or_else(|| get("TRANSFORMERS_OFFLINE"))
            .is_some_and(|v| {
                matches!(
                    v.to_string_lossy().to_uppercase().as_str(),
                    "1" | "ON" | "YES" | "TRUE"
                )
            });
        let token_file = get("HF_TOKEN_PATH")
            .map(expand)
            .unwrap_or_else(|| hf_home.join("token"));
        let token = get("HF_TOKEN")
            .or_else(|| get("HUGGING_FACE_HUB_TOKEN"))
            .map(|t| t.to_string_lossy().trim().to_string())
            .or_else(|| {
                std::fs::read_to_string(token_file)
                    .ok()
                    .map(|t| t.trim().to_string())
            })
            .filter(|t| !t.is_empty());
        HubConfig {
            cache,
            cache_from,
            endpoint,
            token,
            offline,
        }
    }

    /// The folder of `id`'s files in the cache: `{cache}/models--{owner}--{name}`.
    pub fn repo_dir(&self, id: &ModelId) -> PathBuf {
        self.cache
            .join(format!("models--{}", id.repo.replace('/', "--")))
    }
}

/// A Hugging Face model id: `name` or `owner/name`, with an optional `@revision` (a
/// branch, tag or commit hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelId {
    /// `owner/name` or `name`.
    pub repo: String,
    /// A branch, tag or commit hash; [`DEFAULT_REVISION`] when none was given.
    pub revision: String,
}

impl ModelId {
    /// Parses `owner/name[@revision]`; None when `spec` cannot be an id (the rules of
    /// huggingface_hub's `validate_repo_id`: 1 to 96 of `A-Za-z0-9_.-` per part, starting
    /// and ending with a letter, digit or `_`, no `--` or `..`).
    pub fn parse(spec: &str) -> Option<Self> {
        let (repo, revision) = match spec.split_once('@') {
            Some((r, rev)) => (r, rev),
            None => (spec, DEFAULT_REVISION),
        };
        let part_ok = |p: &str| {
            let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
            (1..=96).contains(&p.len())
                && p.chars().all(|c| word(c) || c == '-' || c == '.')
                && p.starts_with(word)
                && p.ends_with(word)
        };
        let parts: Vec<&str> = repo.split('/').collect();
        let repo_ok = parts.len() <= 2
            && parts.iter().all(|p| part_ok(p))
            && !repo.contains("--")
            && !repo.contains("..");
        let rev_ok = !revision.is_empty()
            && !revision.contains("..")
            && !revision.starts_with('/')
            && !revision.ends_with('/')
            && revision
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c));
        (repo_ok && rev_ok).then(|| ModelId {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }
}

impl std::fmt::Display for ModelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.revision == DEFAULT_REVISION {
            f.write_str(&self.repo)
        } else {
            write!(f, "{}@{}", self.repo, self.revision)
        }
    }
}

/// Whether `s` is a full commit hash (40 hex digits).
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The model folder `spec` names: an existing folder as it is; otherwise a Hugging Face id
/// ([`ModelId::parse`]) resolved to its snapshot in `cfg.cache`, downloaded first when the
/// cache lacks it or holds it incomplete ([`missing_files`]) and `cfg` allows the network.
/// Errors are one line: what was searched, why it failed, and what to do.
pub fn resolve_model(spec: &Path, cfg: &HubConfig) -> Result<PathBuf> {
    if spec.is_dir() {
        return Ok(spec.to_path_buf());
    }
    let id = spec.to_str().and_then(ModelId::parse).ok_or_else(|| {
        Error::model(
            spec,
            "no such folder, and not a Hugging Face id (owner/name[@revision]); pass a model folder or an id such as BAAI/bge-m3",
        )
    })?;
    let lacking = match cached_snapshot(cfg, &id) {
        Some(snap) => match missing_files(&snap) {
            None => return Ok(snap),
            Some(m) => Some(format!("snapshot {} lacks {m}", snap.display())),
        },
        None => None,
    };
    if cfg.offline {
        return Err(not_cached(
            &id,
            cfg,
            lacking,
            "HF_HUB_OFFLINE is set, so nothing is downloaded",
        ));
    }
    download(&id, cfg, lacking)
}

/// The snapshot folder the cache holds for `id`, complete or not: the commit in
/// `refs/{revision}`, or the revision itself when it is a commit hash.
pub fn cached_snapshot(cfg: &HubConfig, id: &ModelId) -> Option<PathBuf> {
    let repo = cfg.repo_dir(id);
    let commit = match std::fs::read_to_string(repo.join("refs").join(&id.revision)) {
        Ok(s) => s.trim().to_string(),
        Err(_) => id.revision.clone(),
    };
    if !is_commit_hash(&commit) {
        return None;
    }
    let snap = repo.join("snapshots").join(commit);
    snap.is_dir().then_some(snap)
}

/// What a model folder lacks for embtune to load it, comma-separated (None when it has
/// everything): the backbone's config.json, tokenizer.json and safetensors weights (in the
/// folder of modules.json's Transformer, the root without modules.json), and each Pooling
/// or Dense module's config.json (Dense also its model.safetensors).
pub fn missing_files(dir: &Path) -> Option<String> {
    let mut need: Vec<String> = Vec::new();
    let mut backbone = String::new();
    if let Ok(text) = std::fs::read_to_string(dir.join("modules.json")) {
        let Ok(serde_json::Value::Array(modules)) = serde_json::from_str(&text) else {
            return Some("a readable modules.json".into());
        };
        for m in &modules {
            let path = m.get("path").and_then(|p| p.as_str()).unwrap_or("");
            let class = m
                .get("type")
                .and_then(|t| t.as_str())
                .and_then(|t| t.rsplit('.').next())
                .unwrap_or("");
            let sub = |f: &str| {
                if path.is_empty() {
                    f.to_string()
                } else {
                    format!("{path}/{f}")
                }
            };
            match class {
                "Transformer" => backbone = path.to_string(),
                "Pooling" => need.push(sub("config.json")),
                "Dense" => need.extend([sub("config.json"), sub("model.safetensors")]),
                _ => {}
            }
        }
    }
    let bb = dir.join(&backbone);
    let prefix = if backbone.is_empty() {
        String::new()
    } else {
        format!("{backbone}/")
    };
    need.push(format!("{prefix}config.json"));
    need.push(format!("{prefix}tokenizer.json"));
    let mut missing: Vec<String> = need
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !bb.join("model.safetensors").is_file() && !shards_present(&bb) {
        missing.push(format!("{prefix}model.safetensors"));
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// Whether `dir` has model.safetensors.index.json and every shard it names.
fn shards_present(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("model.safetensors.index.json")) else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    let Some(map) = v.get("weight_map").and_then(|m| m.as_object()) else {
        return false;
    };
    map.values()
        .filter_map(|f| f.as_str())
        .all(|f| dir.join(f).is_file())
}

/// The one-line error for an id the cache cannot serve: the id, the paths searched, why
/// nothing was downloaded, and the fixes.
fn not_cached(id: &ModelId, cfg: &HubConfig, lacking: Option<String>, why: &str) -> Error {
    let repo = cfg.repo_dir(id);
    let rev_flag = if id.revision == DEFAULT_REVISION {
        String::new()
    } else {
        format!(" --revision {}", id.revision)
    };
    let found = match lacking {
        Some(l) => format!("its {l}"),
        None => format!(
            "searched {} and {} (cache from {})",
            repo.join("refs").join(&id.revision).display(),
            repo.join("snapshots").display(),
            cfg.cache_from
        ),
    };
    Error::model(
        id.to_string(),
        format!(
            "no such folder, and the Hugging Face cache does not hold this model complete ({found}); {why}; download it with `huggingface-cli download {}{rev_flag}` (same cache) or pass --model FOLDER",
            id.repo
        ),
    )
}

#[cfg(not(feature = "hub"))]
fn download(id: &ModelId, cfg: &HubConfig, lacking: Option<String>) -> Result<PathBuf> {
    Err(not_cached(
        id,
        cfg,
        lacking,
        "this build of embtune downloads nothing (core feature `hub` is off)",
    ))
}

#[cfg(feature = "hub")]
use fetch::download;

/// Downloading a snapshot: list the files of the revision (`/api/models/{id}/revision/{rev}`),
/// keep those an encoder reads, and fetch each through `/{id}/resolve/{commit}/{file}` into
/// `blobs/{etag}` with a symlink from `snapshots/{commit}/{file}` (huggingface_hub's
/// `file_download.py` layout), then point `refs/{revision}` at the commit.
#[cfg(feature = "hub")]
mod fetch {
    use std::io::{IsTerminal, Read, Write};
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use sha2::Digest;

    use super::{is_commit_hash, missing_files, not_cached, HubConfig, ModelId};
    use crate::error::{Error, Result};

    /// Files above this size get a progress line on stderr.
    const BIG_FILE: u64 = 10 << 20;

    /// How one request failed.
    enum Failure {
        /// No HTTP answer: DNS, connection, TLS or timeout.
        Unreachable(String),
        /// An HTTP status of 400 or more (with huggingface's `X-Error-Code`, if any).
        Status(u16, Option<String>),
    }

    struct Client<'a> {
        cfg: &'a HubConfig,
        /// Follows no redirects: the hub's own headers (etag, commit) are on the first answer.
        head: ureq::Agent,
        /// Follows redirects (file bodies live on a CDN); ureq drops Authorization when a
        /// redirect leaves the host.
        get: ureq::Agent,
    }

    impl<'a> Client<'a> {
        fn new(cfg: &'a HubConfig) -> Self {
            let agent = |redirects| {
                ureq::AgentBuilder::new()
                    .redirects(redirects)
                    .timeout_connect(Duration::from_secs(10))
                    .timeout_read(Duration::from_secs(60))
                    .user_agent(&format!("embtune/{}", crate::VERSION))
                    .build()
            };
            Client {
                cfg,
                head: agent(0),
                get: agent(8),
            }
        }

        fn send(&self, req: ureq::Request) -> std::result::Result<ureq::Response, Failure> {
            let req = req.set("Accept-Encoding", "identity");
            let req = match &self.cfg.token {
                Some(t) => req.set("Authorization", &format!("Bearer {t}")),
                None => req,
            };
            match req.call() {
                Ok(r) => Ok(r),
                Err(ureq::Error::Status(code, r)) => Err(Failure::Status(
                    code,
                    r.header("X-Error-Code").map(str::to_string),
                )),
                Err(ureq::Error::Transport(t)) => Err(Failure::Unreachable(t.to_string())),
            }
        }
    }

    /// The error for a failed request about `id` (`what`: the URL's purpose, for others).
    fn failure(
        id: &ModelId,
        cfg: &HubConfig,
        lacking: Option<String>,
        f: Failure,
        url: &str,
    ) -> Error {
        let ep = &cfg.endpoint;
        let msg = match f {
            Failure::Unreachable(e) => {
                return not_cached(
                    id,
                    cfg,
                    lacking,
                    &format!("{ep} cannot be reached ({})", crate::error::one_line(&e)),
                )
            }
            Failure::Status(code, x) => match (code, x.as_deref()) {
                (_, Some("RevisionNotFound")) => format!(
                    "revision '{}' does not exist on {ep} (HTTP {code}); give a branch, tag or commit of the model after @",
                    id.revision
                ),
                (_, Some("RepoNotFound")) | (404, None) => format!(
                    "no such folder, and the id does not exist on {ep} (HTTP {code}); check the spelling{}",
                    if cfg.token.is_none() { ", or set HF_TOKEN if the model is private" } else { "" }
                ),
                (401 | 403, _) | (_, Some("GatedRepo")) => match cfg.token {
                    None => format!(
                        "the model is gated or private on {ep} (HTTP {code}); accept its terms on the model page and set HF_TOKEN (or run `huggingface-cli login`)"
                    ),
                    Some(_) => format!(
                        "{ep} refused the token (HTTP {code}); check that HF_TOKEN may read this model and that its terms are accepted on the model page"
                    ),
                },
                (_, x) => format!(
                    "{ep} answered HTTP {code}{} for {url}; try again later, or pass --model FOLDER",
                    x.map(|x| format!(" ({x})")).unwrap_or_default()
                ),
            },
        };
        Error::model(id.to_string(), msg)
    }

    /// `s` with every byte but unreserved ones (and `/` when `keep_slash`) percent-encoded.
    fn quote(s: &str, keep_slash: bool) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// Whether a file of the repository is one an encoder may read: configuration and
    /// tokenizer files and safetensors weights (`model.safetensors` or its shards
    /// `model-*.safetensors`) at the root or in a module folder of modules.json (not other
    /// formats' weights or variants, ONNX or OpenVINO exports, READMEs).
    fn wanted(file: &str, module_dirs: &[String]) -> bool {
        let (dir, name) = match file.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", file),
        };
        let in_scope = dir.is_empty() || module_dirs.iter().any(|m| m == dir);
        let weights = name == "model.safetensors"
            || (name.starts_with("model-") && name.ends_with(".safetensors"));
        let other = [".json", ".txt", ".model"]
            .iter()
            .any(|e| name.ends_with(e));
        in_scope && (weights || other) && !name.starts_with('.')
    }

    pub(super) fn download(
        id: &ModelId,
        cfg: &HubConfig,
        lacking: Option<String>,
    ) -> Result<PathBuf> {
        let client = Client::new(cfg);
        let ep = &cfg.endpoint;
        let url = format!(
            "{ep}/api/models/{}/revision/{}",
            quote(&id.repo, true),
            quote(&id.revision, false)
        );
        let info: serde_json::Value = client
            .send(client.get.get(&url))
            .map_err(|f| failure(id, cfg, lacking.clone(), f, &url))
            .and_then(|r| {
                serde_json::from_reader(r.into_reader()).map_err(|e| {
                    Error::model(id.to_string(), format!("{url} answered no model info ({e}); is HF_ENDPOINT ({ep}) a Hugging Face hub?"))
                })
            })?;
        let commit = info
            .get("sha")
            .and_then(|s| s.as_str())
            .filter(|s| is_commit_hash(s))
            .ok_or_else(|| {
                Error::model(id.to_string(), format!("{url} gave no commit hash (field sha); is HF_ENDPOINT ({ep}) a Hugging Face hub?"))
            })?
            .to_string();
        let files: Vec<String> = info
            .get("siblings")
            .and_then(|s| s.as_array())
            .map(|s| {
                s.iter()
                    .filter_map(|f| f.get("rfilename").and_then(|n| n.as_str()))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let repo_dir = cfg.repo_dir(id);
        let snap = repo_dir.join("snapshots").join(&commit);
        let fetch = |file: &str| fetch_file(&client, id, &commit, file, &repo_dir, &lacking);

        let mut module_dirs = Vec::new();
        if files.iter().any(|f| f == "modules.json") {
            fetch("modules.json")?;
            let text = std::fs::read_to_string(snap.join("modules.json"))
                .map_err(|e| Error::io(snap.join("modules.json"), e))?;
            if let Ok(serde_json::Value::Array(m)) = serde_json::from_str(&text) {
                module_dirs = m
                    .iter()
                    .filter_map(|m| m.get("path").and_then(|p| p.as_str()))
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect();
            }
        }
        for file in files.iter().filter(|f| wanted(f, &module_dirs)) {
            fetch(file)?;
        }
        if let Some(m) = missing_files(&snap) {
            return Err(Error::model(
                id.to_string(),
                format!("{ep} has no {m} in revision {}; embtune reads sentence-transformers or Hugging Face folders with safetensors weights (convert the model, or pass --model FOLDER)", id.revision),
            ));
        }
        if id.revision != commit {
            let r = repo_dir.join("refs").join(&id.revision);
            write_through_temp(&r, commit.as_bytes())?;
        }
        Ok(snap)
    }

    /// Fetches one file into `blobs/{etag}` (skipped when the blob is there) and links
    /// `snapshots/{commit}/{file}` to it.
    fn fetch_file(
        client: &Client,
        id: &ModelId,
        commit: &str,
        file: &str,
        repo_dir: &Path,
        lacking: &Option<String>,
    ) -> Result<()> {
        let cfg = client.cfg;
        let url = format!(
            "{}/{}/resolve/{commit}/{}",
            cfg.endpoint,
            quote(&id.repo, true),
            quote(file, true)
        );
        let fail = |f| failure(id, cfg, lacking.clone(), f, &url);
        let head = client.send(client.head.head(&url)).map_err(fail)?;
        // LFS files: the hub answers with a redirect carrying the content's etag and size
        // in X-Linked-*; plain files: ETag and Content-Length (file_download.py's
        // `get_hf_file_metadata`).
        let etag = head
            .header("X-Linked-Etag")
            .or_else(|| head.header("ETag"))
            .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string())
            .filter(|e| !e.is_empty() && !e.contains(['/', '\\']) && e != "." && e != "..")
            .ok_or_else(|| {
                Error::model(
                    id.to_string(),
                    format!(
                        "{url} came without an ETag; is HF_ENDPOINT ({}) a Hugging Face hub?",
                        cfg.endpoint
                    ),
                )
            })?;
        let size: Option<u64> = head
            .header("X-Linked-Size")
            .or_else(|| head.header("Content-Length"))
            .and_then(|s| s.parse().ok());
        let blob = repo_dir.join("blobs").join(&etag);
        if !blob.is_file() {
            let resp = client.send(client.get.get(&url)).map_err(fail)?;
            let label = format!("{}/{file}", id.repo);
            write_blob(&blob, resp.into_reader(), size, &etag, &label)?;
        }
        let pointer = repo_dir.join("snapshots").join(commit).join(file);
        link(&blob, &pointer, file)
    }

    /// Streams `body` to `blob` through `{blob}.incomplete`, checking the size and, for a
    /// sha256 etag (LFS files), the content's hash before the rename.
    fn write_blob(
        blob: &Path,
        mut body: impl Read,
        size: Option<u64>,
        etag: &str,
        label: &str,
    ) -> Result<()> {
        let dir = blob.parent().expect("blobs/ folder");
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tmp = blob.with_file_name(format!("{etag}.incomplete"));
        let mut out = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let verify_sha = etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit());
        let mut hasher = sha2::Sha256::new();
        let progress = size.filter(|s| *s >= BIG_FILE);
        let tty = std::io::stderr().is_terminal();
        if let Some(total) = progress {
            eprintln!("downloading {label} ({} MB)", total >> 20);
        }
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        let mut last = Instant::now();
        let result: std::io::Result<()> = (|| loop {
            let n = body.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            out.write_all(&buf[..n])?;
            if verify_sha {
                hasher.update(&buf[..n]);
            }
            done += n as u64;
            if let (Some(total), true) = (progress, tty) {
                if last.elapsed() > Duration::from_millis(500) {
                    last = Instant::now();
                    eprint!("\r  {} / {} MB", done >> 20, total >> 20);
                }
            }
        })();
        if progress.is_some() && tty {
            eprintln!("\r  {} MB done", done >> 20);
        }
        let check = result
            .map_err(|e| {
                format!("download broke off after {done} bytes ({e}); run the command again")
            })
            .and_then(|()| match size {
                Some(s) if s != done => Err(format!(
                    "got {done} bytes, expected {s}; run the command again"
                )),
                _ => Ok(()),
            })
            .and_then(|()| {
                let got: String = hasher
                    .finalize()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                if verify_sha && got != etag {
                    Err(format!(
                        "content has sha256 {got}, expected {etag}; run the command again"
                    ))
                } else {
                    Ok(())
                }
            })
            .and_then(|()| out.sync_all().map_err(|e| e.to_string()));
        drop(out);
        if let Err(msg) = check {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::model(label, msg));
        }
        std::fs::rename(&tmp, blob).map_err(|e| Error::io(blob, e))
    }

    /// Points `pointer` (`snapshots/{commit}/{file}`) at `blob` by a relative symlink, as
    /// huggingface_hub does (a copy where symlinks are unavailable).
    fn link(blob: &Path, pointer: &Path, file: &str) -> Result<()> {
        let dir = pointer.parent().expect("snapshot folder");
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        if std::fs::symlink_metadata(pointer).is_ok() {
            std::fs::remove_file(pointer).map_err(|e| Error::io(pointer, e))?;
        }
        // snapshots/{commit}/{file}: up past the file's folders, the commit and snapshots/.
        let up = 2 + file.matches('/').count();
        let target: PathBuf = (0..up)
            .map(|_| "..")
            .collect::<PathBuf>()
            .join("blobs")
            .join(blob.file_name().expect("blob name"));
        #[cfg(unix)]
        let made = std::os::unix::fs::symlink(&target, pointer);
        #[cfg(not(unix))]
        let made = std::fs::copy(blob, pointer).map(|_| ());
        made.map_err(|e| Error::io(pointer, e))
    }

    /// Writes `path` through a temporary sibling and a rename.
    fn write_through_temp(path: &Path, data: &[u8]) -> Result<()> {
        let dir = path.parent().expect("refs folder");
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tmp = path.with_extension("embtune-tmp");
        std::fs::write(&tmp, data).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn wanted_files_are_configs_tokenizers_and_safetensors_in_scope() {
            let m = vec!["1_Pooling".to_string(), "2_Dense".to_string()];
            for f in [
                "config.json",
                "tokenizer.json",
                "vocab.txt",
                "model.safetensors",
                "model-00001-of-00002.safetensors",
                "sentencepiece.bpe.model",
                "1_Pooling/config.json",
                "2_Dense/model.safetensors",
            ] {
                assert!(wanted(f, &m), "{f}");
            }
            for f in [
                "pytorch_model.bin",
                "README.md",
                ".gitattributes",
                "onnx/model.onnx",
                "onnx/config.json",
                "openvino/openvino_model.xml",
                "2_Dense/pytorch_model.bin",
                "model.fp16.safetensors",
                "adapter_model.safetensors",
            ] {
                assert!(!wanted(f, &m), "{f}");
            }
        }

        #[test]
        fn quote_keeps_unreserved_and_optionally_slashes() {
            assert_eq!(quote("refs/pr/1", false), "refs%2Fpr%2F1");
            assert_eq!(
                quote("1_Pooling/config.json", true),
                "1_Pooling/config.json"
            );
            assert_eq!(quote("a b", true), "a%20b");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).map(OsString::from)
    }

    #[test]
    fn ids_parse_like_huggingface_hub_validates_them() {
        let id = ModelId::parse("BAAI/bge-m3").unwrap();
        assert_eq!(
            (id.repo.as_str(), id.revision.as_str()),
            ("BAAI/bge-m3", "main")
        );
        let id = ModelId::parse("bert-base-uncased@refs/pr/1").unwrap();
        assert_eq!(
            (id.repo.as_str(), id.revision.as_str()),
            ("bert-base-uncased", "refs/pr/1")
        );
        assert_eq!(id.to_string(), "bert-base-uncased@refs/pr/1");
        for bad in [
            "",
            "/abs/path",
            "./model",
            "a/b/c",
            "a--b/c",
            "a/..b",
            "-a/b",
            "a/b-",
            "a/b@",
            "a/b@../x",
            "a b",
            "a/b@x y",
            "~/m",
        ] {
            assert!(ModelId::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn cache_folder_follows_huggingface_hub_precedence() {
        let c = HubConfig::from_vars(vars(&[("HOME", "/h")]));
        assert_eq!(c.cache, Path::new("/h/.cache/huggingface/hub"));
        assert_eq!(c.endpoint, DEFAULT_ENDPOINT);
        assert!(!c.offline && c.token.is_none());
        let c = HubConfig::from_vars(vars(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]));
        assert_eq!(c.cache, Path::new("/x/huggingface/hub"));
        let c = HubConfig::from_vars(vars(&[
            ("HOME", "/h"),
            ("XDG_CACHE_HOME", "/x"),
            ("HF_HOME", "~/hf"),
        ]));
        assert_eq!(c.cache, Path::new("/h/hf/hub"));
        assert_eq!(c.cache_from, "HF_HOME");
        let c = HubConfig::from_vars(vars(&[
            ("HF_HOME", "/hf"),
            ("HF_HUB_CACHE", "/c"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_HUB_OFFLINE", "yes"),
            ("HF_TOKEN", " tok\n"),
        ]));
        assert_eq!(c.cache, Path::new("/c"));
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        assert!(c.offline);
        assert_eq!(c.token.as_deref(), Some("tok"));
        let c = HubConfig::from_vars(vars(&[
            ("HF_HUB_OFFLINE", "0"),
            ("TRANSFORMERS_OFFLINE", "1"),
        ]));
        assert!(
            !c.offline,
            "HF_HUB_OFFLINE wins when set, as in constants.py"
        );
        let c = HubConfig::from_vars(vars(&[("TRANSFORMERS_OFFLINE", "1")]));
        assert!(c.offline);
    }

    #[test]
    fn token_file_is_read_when_no_variable_is_set() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("token"), "hf_secret\n").unwrap();
        let home = tmp.path().to_str().unwrap();
        let c = HubConfig::from_vars(vars(&[("HF_HOME", home)]));
        assert_eq!(c.token.as_deref(), Some("hf_secret"));
        let c = HubConfig::from_vars(vars(&[("HF_HOME", home), ("HF_TOKEN", "env")]));
        assert_eq!(c.token.as_deref(), Some("env"));
    }

    #[test]
    fn a_spec_that_is_neither_folder_nor_id_says_so() {
        let cfg = HubConfig::new("/nonexistent-cache");
        let e = resolve_model(Path::new("./no/such/dir"), &cfg)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no such folder") && e.contains("owner/name"),
            "{e}"
        );
    }
}
