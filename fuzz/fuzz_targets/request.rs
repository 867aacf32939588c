#![no_main]
// The body is tidings_fuzz_targets::request, which the test suite also replays over corpus/request.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tidings_fuzz_targets::request(data));
