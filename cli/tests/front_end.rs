//! The `embtune` binary as a front end: `--help` lists every command and `list` shows the
//! losses in every build; without the `torch` feature it maps no libtorch and hands the
//! libtorch commands, arguments and exit status unchanged, to the binary it finds.

use std::process::{Command, Output};

fn embtune(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_embtune"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_lists_every_command() {
    let o = embtune(&["--help"], &[]);
    assert!(o.status.success());
    let help = text(&o.stdout);
    for cmd in [
        "gen", "list", "doctor", "train", "eval", "encode", "score", "mine",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd} missing from --help: {help}"
        );
    }
}

#[test]
fn list_shows_every_kind() {
    let o = embtune(&["list"], &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for want in [
        "strategies:",
        "samplers:",
        "losses:",
        "  baseline ",
        "  same-category ",
        "  mnrl ",
    ] {
        assert!(out.contains(want), "{want:?} missing: {out}");
    }
    let o = embtune(&["list", "losses"], &[]);
    assert!(text(&o.stdout).contains("defaults: {\"scale\":20.0"));
}

#[cfg(not(feature = "torch"))]
#[test]
fn the_front_end_links_no_libtorch() {
    let Ok(o) = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_embtune"))
        .output()
    else {
        return; // no ldd here
    };
    assert!(!text(&o.stdout).contains("libtorch"), "{}", text(&o.stdout));
}

#[cfg(not(feature = "torch"))]
#[test]
fn a_missing_backend_is_one_line_naming_where_to_look() {
    let o = embtune(
        &["train", "--data", "x.csv"],
        &[("EMBTUNE_TORCH_BIN", "/nonexistent/embtune-torch")],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("`embtune train` needs libtorch")
            && err.contains("EMBTUNE_TORCH_BIN=/nonexistent/embtune-torch"),
        "{err}"
    );
}

#[cfg(all(unix, not(feature = "torch")))]
#[test]
fn libtorch_commands_are_handed_on_with_their_arguments_and_exit_status() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("embtune-front-end-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("embtune-torch");
    std::fs::write(&fake, "#!/bin/sh\necho \"args: $*\"\nexit 7\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = embtune(
        &["eval", "--help", "--model", "m dir"],
        &[("EMBTUNE_TORCH_BIN", fake.to_str().unwrap())],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "args: eval --help --model m dir\n");
}

/// `gen` with a sampler that runs a model goes to the libtorch binary, arguments unchanged;
/// `gen` with any other sampler stays in the front end.
#[cfg(all(unix, not(feature = "torch")))]
#[test]
fn gen_with_a_model_sampler_is_handed_on() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("embtune-front-end-gen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("embtune-torch");
    std::fs::write(&fake, "#!/bin/sh\necho \"args: $*\"\nexit 3\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = [("EMBTUNE_TORCH_BIN", fake.to_str().unwrap())];
    let o = embtune(
        &[
            "gen",
            "--sampler",
            "model-mined",
            "--sampler-opt",
            "scope=part",
            "--data",
            "x.csv",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "args: gen --sampler model-mined --sampler-opt scope=part --data x.csv\n"
    );
    // A bad option is answered by the front end itself, naming the option.
    let o = embtune(
        &[
            "gen",
            "--sampler",
            "model-mined",
            "--sampler-opt",
            "scope=table",
            "--data",
            "x.csv",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("scope"), "{}", text(&o.stderr));
    // Other samplers never reach the backend.
    let o = embtune(
        &[
            "gen",
            "--sampler",
            "same-category",
            "--data",
            "/nonexistent.csv",
        ],
        &env,
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(o.status.code(), Some(1));
    assert!(!text(&o.stdout).contains("args:"));
}
