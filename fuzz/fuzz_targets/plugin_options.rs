//! cargo-fuzz target: embtune_core::fuzzing::plugin_options.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    embtune_plugins::link();
    embtune_core::fuzzing::plugin_options(data);
});
