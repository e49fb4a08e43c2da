//! cargo-fuzz target: embtune_core::fuzzing::training_data.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    embtune_core::fuzzing::training_data(data);
});
