//! The session protocol's parser (`session::protocol::parse`), run on every text frame a
//! participant sends: no input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = custos::session::protocol::parse(text);
    }
});
