//! libFuzzer entry point; the target itself is `rack_agent_fuzz::ipmi_records`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rack_agent_fuzz::ipmi_records(data));
