//! The archive's object reader (`archive::stream`) on damaged objects: a valid object is written
//! from the input, then damaged as the input says (a byte flipped, the file cut short, a chunk's
//! worth of bytes dropped). Both readers must either return exactly what was written or refuse
//! with an error: never panic, never return other content.
#![no_main]

use std::io::Cursor;

use custos::archive::stream::{SeekableReader, StreamReader, StreamWriter};
use custos::crypto::SecretKey;
use custos::model::ObjectId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let (ctl, plain) = data.split_at(6);
    let key = SecretKey::from_bytes([7; 32]);
    let id = ObjectId([9; 16]);
    let mut w = StreamWriter::new(Vec::new(), &key, id).unwrap();
    // Several chunks: append in pieces and flush between them.
    for piece in plain.chunks(1 + usize::from(ctl[0]) * 4) {
        w.append(piece).unwrap();
        w.flush_chunk().unwrap();
    }
    let (mut file, _) = w.finish().unwrap();
    let at = usize::from(u16::from_le_bytes([ctl[1], ctl[2]])) % file.len();
    match ctl[3] % 3 {
        0 => file[at] ^= ctl[4] | 1,
        1 => file.truncate(at),
        _ => {
            let end = (at + usize::from(ctl[5])).min(file.len());
            file.drain(at..end);
        }
    }
    if let Ok(r) = StreamReader::open(Cursor::new(&file), &key, id)
        && let Ok(back) = r.read_to_end()
    {
        assert_eq!(&back[..], plain, "a damaged object read back as other content");
    }
    if let Ok(mut r) = SeekableReader::open(Cursor::new(&file), &key, id) {
        let n = r.plain_len() as usize;
        if let Ok(back) = r.read_at(0, n) {
            assert!(plain.starts_with(&back), "the seekable reader returned other content");
        }
    }
});
