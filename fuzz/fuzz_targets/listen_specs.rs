#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| start_server::fuzzing::listen_specs(data));
