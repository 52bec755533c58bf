//! Words of a transcript for the blind word index: which words are indexed, and the term stored
//! for each (an HMAC under the index key, never the word). Pure.

use std::collections::BTreeSet;

use hmac::{KeyInit, Mac};

use crate::crypto::SecretKey;
use crate::store::Term;

/// Indexed words are 3 to 40 letters or digits, lower-cased; at most this many per message.
const MAX_WORDS: usize = 200;

/// The distinct words of a text that the index keeps.
pub fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| (3..=40).contains(&w.chars().count()))
        .map(str::to_lowercase)
        .take(MAX_WORDS)
        .collect()
}

/// The stored term of a word.
pub fn term(key: &SecretKey, word: &str) -> Term {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.expose()).expect("any key length");
    mac.update(word.to_lowercase().as_bytes());
    let full = mac.finalize().into_bytes();
    let mut t = [0u8; 16];
    t.copy_from_slice(&full[..16]);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_normalized_and_terms_depend_on_the_key() {
        let w = words("The PRINTER jams; printer tray-2, ok? Ünïcode straße");
        assert_eq!(
            w.iter().map(String::as_str).collect::<Vec<_>>(),
            ["jams", "printer", "straße", "the", "tray", "ünïcode"]
        );
        let (a, b) = (
            SecretKey::from_bytes([1; 32]),
            SecretKey::from_bytes([2; 32]),
        );
        assert_eq!(term(&a, "Printer"), term(&a, "printer"));
        assert_ne!(term(&a, "printer"), term(&b, "printer"));
        assert_ne!(term(&a, "printer"), term(&a, "printers"));
    }
}
