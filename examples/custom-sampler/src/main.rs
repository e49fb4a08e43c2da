//! `my-embtune`: the embtune CLI with one more sampler. Referring to both plugin crates
//! keeps their registrations in the binary; then `my-embtune gen --sampler lexical-overlap`
//! works like any built-in.
fn main() -> std::process::ExitCode {
    embtune_plugins::link();
    embtune_example_sampler::link();
    embtune::run()
}
