//! The recording reader the review player and exports use (`session::screen::read_records`): the
//! input is a recording's plaintext, stored as a real archive object and read back record by
//! record from an offset the input chooses. It must never panic, and what it returns is always
//! a run of the stored bytes from that offset.
#![no_main]

use std::io::Cursor;

use custos::archive::stream::{SeekableReader, StreamWriter};
use custos::crypto::SecretKey;
use custos::model::ObjectId;
use custos::session::screen::read_records;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (ctl, plain) = data.split_at(2);
    let key = SecretKey::from_bytes([3; 32]);
    let id = ObjectId([5; 16]);
    let mut w = StreamWriter::new(Vec::new(), &key, id).unwrap();
    w.append(plain).unwrap();
    let (file, _) = w.finish().unwrap();
    let mut r = SeekableReader::open(Cursor::new(file), &key, id).unwrap();
    let offset = u64::from(ctl[0]) % (plain.len() as u64 + 1);
    if let Ok((out, next)) = read_records(&mut r, offset, usize::from(ctl[1]) * 16) {
        let start = offset as usize;
        assert_eq!(next as usize, start + out.len());
        assert_eq!(&plain[start..start + out.len()], &out[..]);
    }
});
