//! The screen-message decoder the relay runs on every binary message from a client
//! (`custos::remote::parse`), and the input and annotation checks on every viewer message: no
//! input may panic, and whatever parses must satisfy the invariants the relay and the viewers
//! rely on.
#![no_main]

use custos::remote::{Annotation, Codec, Input, MAX_MESSAGE, Message, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse(data) {
        assert!(data.len() <= MAX_MESSAGE);
        match m {
            Message::Update(u) => {
                assert!(u.width >= 1 && u.height >= 1);
                for t in u.tiles {
                    assert!(u32::from(t.x) + u32::from(t.w) <= u32::from(u.width));
                    assert!(u32::from(t.y) + u32::from(t.h) <= u32::from(u.height));
                    if t.codec == Codec::Raw {
                        assert_eq!(t.data.len(), usize::from(t.w) * usize::from(t.h) * 3);
                    }
                }
            }
            Message::Media { data, .. } => assert!(!data.is_empty()),
            Message::Cursor { .. } => {}
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(Input::Move { x, y }) = Input::parse(v.clone(), 1920, 1080) {
            assert!(x < 1920 && y < 1080);
        }
        if let Ok(Annotation::Stroke { points, .. }) = Annotation::parse(v, 1920, 1080) {
            assert!(points.iter().all(|[x, y]| *x < 1920 && *y < 1080));
        }
    }
});
