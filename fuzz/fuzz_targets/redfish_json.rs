//! libFuzzer entry point; the target itself is `rack_agent_fuzz::redfish_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rack_agent_fuzz::redfish_json(data));
