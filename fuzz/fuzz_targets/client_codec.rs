//! libFuzzer entry for the `client_codec` checks; see `hearth_fuzz::client_codec` for the input layout and the
//! invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hearth_fuzz::client_codec::check(data));
