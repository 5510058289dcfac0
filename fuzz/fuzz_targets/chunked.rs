//! libFuzzer entry for the `chunked` checks; see `hearth_fuzz::chunked` for the input layout and the
//! invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hearth_fuzz::chunked::check(data));
