//! libFuzzer entry for the `response` checks; see `hearth_fuzz::response` for the input layout and the
//! invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hearth_fuzz::response::check(data));
