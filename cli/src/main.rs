//! The `embtune` binary: the built-in plugins plus the command line in [`embtune::run`].
//! Built without the `torch` feature (the default) it is the torch-free front end, which
//! hands the libtorch commands to `embtune-torch` (the `cli-torch` package).
fn main() -> std::process::ExitCode {
    embtune_plugins::link();
    embtune::run()
}
