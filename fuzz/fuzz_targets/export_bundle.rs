//! The export verifier auditors run offline (`export::verify`) on whatever they were sent: the
//! tar reader and the BagIt checks. No input may panic; nothing unsigned may verify.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = custos::export::verify(Cursor::new(data), None, None, |_| {}) {
        panic!("an unsigned bundle verified: {report:?}");
    }
});
