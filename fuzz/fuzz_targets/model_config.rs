//! cargo-fuzz target: embtune_core::fuzzing::model_config.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    embtune_core::fuzzing::model_config(data);
});
