#![no_main]
// The body is tidings_fuzz_targets::unseal_registration, which the test suite also replays over corpus/unseal_registration.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tidings_fuzz_targets::unseal_registration(data));
