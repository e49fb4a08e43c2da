//! The `embtune` binary: the built-in plugins plus the command line in [`embtune::run`].
fn main() -> std::process::ExitCode {
    embtune_plugins::link();
    embtune::run()
}
