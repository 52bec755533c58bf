//! The signed-note and checkpoint parsers auditors run on what they are given
//! (`audit::note`): verifier keys, notes and checkpoint bodies. No input may panic, and no
//! note the fixed key did not sign may open.
#![no_main]

use custos::audit::note::{Checkpoint, NoteSigner, NoteVerifier};
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = NoteVerifier::from_vkey(text);
    let _ = Checkpoint::parse_body(text);
    let verifier = NoteSigner::new("custos.example/log", SigningKey::from_bytes(&[1; 32])).verifier();
    if let Ok(cp) = verifier.open_checkpoint(text) {
        // Only a note this key signed opens; the fuzzer cannot forge one, so it must be a
        // checkpoint the signer would produce again.
        assert_eq!(cp.origin, "custos.example/log");
    }
});
