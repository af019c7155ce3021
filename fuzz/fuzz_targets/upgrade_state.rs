#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = start_server::fuzzing::upgrade_state(data);
});
