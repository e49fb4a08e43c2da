//! `embtune-torch`: the embtune command line with libtorch, every command in-process. The
//! torch-free `embtune` front end `exec`s it (with `argv[0]` = `embtune`) for `train`,
//! `eval`, `encode`, `score`, `mine` and `doctor`; run directly, it answers every command itself.
fn main() -> std::process::ExitCode {
    embtune_plugins::link();
    embtune::run()
}
