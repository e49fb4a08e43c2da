//! cargo-fuzz target: embtune_core::fuzzing::safetensors.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    embtune_core::fuzzing::safetensors(data);
});
