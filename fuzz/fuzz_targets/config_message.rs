#![no_main]
// The body is tidings_fuzz_targets::config_message, which the test suite also replays over corpus/config_message.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tidings_fuzz_targets::config_message(data));
