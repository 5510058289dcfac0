//! libFuzzer entry for the `request_head` checks; see `hearth_fuzz::request_head` for the input layout and the
//! invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hearth_fuzz::request_head::check(data));
