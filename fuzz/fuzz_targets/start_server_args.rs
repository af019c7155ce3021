#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = start_server::fuzzing::start_server_args(data);
});
