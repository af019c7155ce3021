#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| start_server::fuzzing::envdir(data));
