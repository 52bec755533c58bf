//! The retention policy parser (`policy::parse_file`): no input may panic, and every refusal
//! names a line of the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(e) = custos::policy::parse_file(Path::new("fuzz.toml"), text)
    {
        assert!(e.line >= 1 && e.line <= text.lines().count().max(1) + 1, "{e}");
    }
});
