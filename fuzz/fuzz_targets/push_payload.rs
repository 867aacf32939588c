#![no_main]
// The body is tidings_fuzz_targets::push_payload, which the test suite also replays over corpus/push_payload.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tidings_fuzz_targets::push_payload(data));
