//! The archive object codec: AES-256-GCM in 64 KiB chunks with STREAM nonces, over any
//! `Write` or `Read`. Pure: no files, no fsync, no metadata; `archive` adds those.
//!
//! Byte layout (docs/formats/archive.md is the normative text):
//!
//! ```text
//! header   64 bytes  magic "CUSTOSAO" | version u16 | header length u16 | chunk size u32
//!                    | object id 16 | key commitment 32
//! record   4 bytes   flags u8 (bit 0: final, bit 1: sealed by crash recovery)
//!                    | plaintext length u24, big endian
//!          n bytes   ciphertext (n = plaintext length, at most 65536)
//!          16 bytes  GCM tag
//! ```
//!
//! Record `i` is sealed with nonce `i as u88 big endian || flags`, and associated data
//! `header || record header`, under `HKDF-SHA256(data key, salt = object id, "custos archive v1
//! payload")`. So a chunk moved to another position, another object or past the final chunk fails
//! authentication; a dropped final chunk is seen as truncation; and a wrong data key is refused
//! by the key commitment before any chunk is decrypted.

use std::io::{self, Read, Seek, SeekFrom, Write};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit, Nonce, Tag};
use zeroize::Zeroizing;

use crate::crypto::{self, SecretKey, Sha256Stream};
use crate::model::ObjectId;

pub const MAGIC: [u8; 8] = *b"CUSTOSAO";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 64;
pub const CHUNK_SIZE: usize = 64 * 1024;
pub const TAG_LEN: usize = 16;
pub const RECORD_HEADER_LEN: usize = 4;
const FLAG_FINAL: u8 = 0x01;
/// Set (with `FLAG_FINAL`) only on the empty final record that crash recovery appends. Its own
/// nonce domain means recovery can never reuse a nonce the writer may already have used, even
/// if the writer's final record was on disk but damaged.
const FLAG_RECOVERED: u8 = 0x02;

const PAYLOAD_INFO: &[u8] = b"custos archive v1 payload";
const COMMIT_INFO: &[u8] = b"custos archive v1 key commitment";

/// Why an object could not be read. Every variant means: no plaintext from this point on.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("header is truncated ({0} of {HEADER_LEN} bytes)")]
    TruncatedHeader(usize),
    #[error("not a Custos archive object (bad magic)")]
    BadMagic,
    #[error("unsupported archive format version {0} (this build reads version {VERSION})")]
    UnsupportedVersion(u16),
    #[error("malformed header: {0}")]
    BadHeader(&'static str),
    #[error("file holds object {found}, not {expected} (swapped or misplaced file)")]
    WrongObject { expected: ObjectId, found: ObjectId },
    #[error("key commitment does not match: wrong data key or damaged header")]
    WrongKey,
    #[error("chunk {index}: length {len} exceeds the maximum of {CHUNK_SIZE}")]
    ChunkTooLong { index: u64, len: usize },
    #[error("chunk {index}: unknown flags {flags:#04x}")]
    UnknownFlags { index: u64, flags: u8 },
    #[error("chunk {index}: empty chunk before the final one")]
    EmptyChunk { index: u64 },
    #[error("truncated after {chunks} chunks: no final chunk")]
    Truncated { chunks: u64 },
    #[error(
        "chunk {index} failed authentication (damaged, reordered, duplicated or from another object)"
    )]
    Authentication { index: u64 },
    #[error("data after the final chunk")]
    TrailingData,
}

/// The two values derived from an object's data key.
struct ObjectKeys {
    cipher: Aes256Gcm,
    commitment: [u8; 32],
}

impl ObjectKeys {
    fn derive(data_key: &SecretKey, id: ObjectId) -> Self {
        let payload = crypto::hkdf(data_key.expose(), &id.0, PAYLOAD_INFO);
        let commitment = *crypto::hkdf(data_key.expose(), &id.0, COMMIT_INFO).expose();
        let cipher = Aes256Gcm::new(payload.expose().into());
        Self { cipher, commitment }
    }
}

fn encode_header(id: ObjectId, commitment: &[u8; 32]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_be_bytes());
    h[10..12].copy_from_slice(&(HEADER_LEN as u16).to_be_bytes());
    h[12..16].copy_from_slice(&(CHUNK_SIZE as u32).to_be_bytes());
    h[16..32].copy_from_slice(&id.0);
    h[32..64].copy_from_slice(commitment);
    h
}

/// Checks a header and returns the object id it names, without needing a key.
pub fn parse_header(h: &[u8; HEADER_LEN]) -> Result<ObjectId, StreamError> {
    if h[0..8] != MAGIC {
        return Err(StreamError::BadMagic);
    }
    let version = u16::from_be_bytes([h[8], h[9]]);
    if version != VERSION {
        return Err(StreamError::UnsupportedVersion(version));
    }
    if u16::from_be_bytes([h[10], h[11]]) as usize != HEADER_LEN {
        return Err(StreamError::BadHeader("header length is not 64"));
    }
    if u32::from_be_bytes([h[12], h[13], h[14], h[15]]) as usize != CHUNK_SIZE {
        return Err(StreamError::BadHeader("chunk size is not 65536"));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&h[16..32]);
    Ok(ObjectId(id))
}

fn nonce(counter: u64, flags: u8) -> Nonce<Aes256Gcm> {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = flags;
    n.into()
}

fn record_header(flags: u8, len: usize) -> [u8; RECORD_HEADER_LEN] {
    debug_assert!(len <= CHUNK_SIZE);
    let l = (len as u32).to_be_bytes();
    [flags, l[1], l[2], l[3]]
}

fn aad(header: &[u8; HEADER_LEN], rec: &[u8]) -> [u8; HEADER_LEN + RECORD_HEADER_LEN] {
    let mut a = [0u8; HEADER_LEN + RECORD_HEADER_LEN];
    a[..HEADER_LEN].copy_from_slice(header);
    a[HEADER_LEN..].copy_from_slice(&rec[..RECORD_HEADER_LEN]);
    a
}

/// What a finished stream contained, for the object's metadata row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSummary {
    pub chunks: u64,
    pub plain_len: u64,
    pub cipher_len: u64,
    pub plain_sha256: [u8; 32],
    pub cipher_sha256: [u8; 32],
}

/// Encrypts an object as it is appended. Plaintext waits only in memory, in the record buffer
/// that is then encrypted in place; a writer dropped unfinished wipes it.
pub struct StreamWriter<W: Write> {
    out: W,
    keys: ObjectKeys,
    header: [u8; HEADER_LEN],
    counter: u64,
    /// Record header space, then buffered plaintext; encrypted in place when emitted, and wiped
    /// (whole capacity) when the writer is dropped.
    rec: Zeroizing<Vec<u8>>,
    plain_hash: Sha256Stream,
    cipher_hash: Sha256Stream,
    plain_len: u64,
    cipher_len: u64,
}

impl<W: Write> StreamWriter<W> {
    /// Writes the header and returns a writer positioned at the first chunk.
    pub fn new(mut out: W, data_key: &SecretKey, id: ObjectId) -> io::Result<Self> {
        let keys = ObjectKeys::derive(data_key, id);
        let header = encode_header(id, &keys.commitment);
        out.write_all(&header)?;
        let mut cipher_hash = Sha256Stream::default();
        cipher_hash.update(&header);
        let mut rec = Zeroizing::new(Vec::with_capacity(RECORD_HEADER_LEN + CHUNK_SIZE + TAG_LEN));
        rec.resize(RECORD_HEADER_LEN, 0);
        Ok(Self {
            out,
            keys,
            header,
            counter: 0,
            rec,
            plain_hash: Sha256Stream::default(),
            cipher_hash,
            plain_len: 0,
            cipher_len: HEADER_LEN as u64,
        })
    }

    fn pending(&self) -> usize {
        self.rec.len() - RECORD_HEADER_LEN
    }

    /// Buffers plaintext, emitting a record each time 64 KiB have gathered.
    pub fn append(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let room = CHUNK_SIZE - self.pending();
            let take = room.min(data.len());
            self.rec.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending() == CHUNK_SIZE {
                self.emit(false)?;
            }
        }
        Ok(())
    }

    /// Emits whatever plaintext is buffered as a (short) non-final record so that the caller can
    /// make it durable. Returns whether a record was written.
    pub fn flush_chunk(&mut self) -> io::Result<bool> {
        if self.pending() == 0 {
            return Ok(false);
        }
        self.emit(false)?;
        Ok(true)
    }

    /// Bytes of plaintext appended so far, buffered or written.
    pub fn plain_len(&self) -> u64 {
        self.plain_len + self.pending() as u64
    }

    /// Chunks written so far.
    pub fn chunks(&self) -> u64 {
        self.counter
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Writes the final record (with whatever is buffered, possibly nothing) and returns the
    /// inner writer with a summary. The caller makes it durable.
    pub fn finish(mut self) -> io::Result<(W, StreamSummary)> {
        self.emit(true)?;
        let summary = StreamSummary {
            chunks: self.counter,
            plain_len: self.plain_len,
            cipher_len: self.cipher_len,
            plain_sha256: std::mem::take(&mut self.plain_hash).finish(),
            cipher_sha256: std::mem::take(&mut self.cipher_hash).finish(),
        };
        Ok((self.out, summary))
    }

    fn emit(&mut self, last: bool) -> io::Result<()> {
        let len = self.pending();
        let flags = if last { FLAG_FINAL } else { 0 };
        let rh = record_header(flags, len);
        self.rec[..RECORD_HEADER_LEN].copy_from_slice(&rh);
        self.plain_hash.update(&self.rec[RECORD_HEADER_LEN..]);
        let aad = aad(&self.header, &self.rec);
        let tag = self
            .keys
            .cipher
            .encrypt_inout_detached(
                &nonce(self.counter, flags),
                &aad,
                (&mut self.rec[RECORD_HEADER_LEN..]).into(),
            )
            .map_err(|_| io::Error::other("AES-GCM refused to encrypt a chunk"))?;
        self.rec.extend_from_slice(&tag);
        self.out.write_all(&self.rec)?;
        self.cipher_hash.update(&self.rec);
        self.cipher_len += self.rec.len() as u64;
        self.plain_len += len as u64;
        self.counter += 1;
        self.rec.truncate(RECORD_HEADER_LEN);
        Ok(())
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full<R: Read>(inp: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match inp.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn read_header<R: Read>(
    inp: &mut R,
    data_key: &SecretKey,
    expected: ObjectId,
) -> Result<([u8; HEADER_LEN], ObjectKeys), StreamError> {
    let mut header = [0u8; HEADER_LEN];
    let n = read_full(inp, &mut header)?;
    if n < HEADER_LEN {
        return Err(StreamError::TruncatedHeader(n));
    }
    let found = parse_header(&header)?;
    if found != expected {
        return Err(StreamError::WrongObject { expected, found });
    }
    let keys = ObjectKeys::derive(data_key, expected);
    if !crypto::ct_eq(&header[32..64], &keys.commitment) {
        return Err(StreamError::WrongKey);
    }
    Ok((header, keys))
}

/// Parses and checks a record header; returns (flags, plaintext length).
fn parse_record_header(
    index: u64,
    rh: &[u8; RECORD_HEADER_LEN],
) -> Result<(u8, usize), StreamError> {
    let flags = rh[0];
    let valid = flags == 0 || flags == FLAG_FINAL || flags == FLAG_FINAL | FLAG_RECOVERED;
    if !valid {
        return Err(StreamError::UnknownFlags { index, flags });
    }
    let len = u32::from_be_bytes([0, rh[1], rh[2], rh[3]]) as usize;
    if len > CHUNK_SIZE {
        return Err(StreamError::ChunkTooLong { index, len });
    }
    if len == 0 && flags == 0 {
        return Err(StreamError::EmptyChunk { index });
    }
    if flags & FLAG_RECOVERED != 0 && len != 0 {
        return Err(StreamError::UnknownFlags { index, flags });
    }
    Ok((flags, len))
}

/// Decrypts one record in place (`rec` = record header, ciphertext, tag); on success the
/// plaintext is `rec[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len]`.
fn open_record(
    keys: &ObjectKeys,
    header: &[u8; HEADER_LEN],
    index: u64,
    flags: u8,
    rec: &mut [u8],
) -> Result<(), StreamError> {
    let aad = aad(header, rec);
    let len = rec.len() - RECORD_HEADER_LEN - TAG_LEN;
    let (body, tag) = rec[RECORD_HEADER_LEN..].split_at_mut(len);
    let tag =
        Tag::<Aes256Gcm>::try_from(&*tag).map_err(|_| StreamError::Authentication { index })?;
    keys.cipher
        .decrypt_inout_detached(&nonce(index, flags), &aad, body.into(), &tag)
        .map_err(|_| StreamError::Authentication { index })
}

/// Reads an object front to back, verifying every chunk before returning its plaintext.
pub struct StreamReader<R: Read> {
    inp: R,
    keys: ObjectKeys,
    header: [u8; HEADER_LEN],
    counter: u64,
    rec: Zeroizing<Vec<u8>>,
    finished: bool,
    recovered: bool,
    /// Whether to compute the plaintext and ciphertext digests (for verification and recovery;
    /// playback does not need them: every chunk is authenticated anyway).
    digests: bool,
    plain_hash: Sha256Stream,
    cipher_hash: Sha256Stream,
    plain_len: u64,
    cipher_len: u64,
}

impl<R: Read> StreamReader<R> {
    /// Reads the header and checks that it names `expected` and that `data_key` is its key.
    pub fn open(mut inp: R, data_key: &SecretKey, expected: ObjectId) -> Result<Self, StreamError> {
        let (header, keys) = read_header(&mut inp, data_key, expected)?;
        let mut cipher_hash = Sha256Stream::default();
        cipher_hash.update(&header);
        Ok(Self {
            inp,
            keys,
            header,
            counter: 0,
            rec: Zeroizing::new(Vec::with_capacity(RECORD_HEADER_LEN + CHUNK_SIZE + TAG_LEN)),
            finished: false,
            recovered: false,
            digests: true,
            plain_hash: Sha256Stream::default(),
            cipher_hash,
            plain_len: 0,
            cipher_len: HEADER_LEN as u64,
        })
    }

    /// Skips the digests: for reading content, where the per-chunk authentication suffices.
    pub fn without_digests(mut self) -> Self {
        self.digests = false;
        self
    }

    /// Whether the final chunk has been read and verified.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Whether the final chunk is one that crash recovery appended.
    pub fn sealed_by_recovery(&self) -> bool {
        self.recovered
    }

    /// The next chunk's verified plaintext; `None` once the final chunk has been read and the
    /// input is known to end there.
    pub fn next_chunk(&mut self) -> Result<Option<&[u8]>, StreamError> {
        if self.finished {
            return Ok(None);
        }
        let index = self.counter;
        let mut rh = [0u8; RECORD_HEADER_LEN];
        if read_full(&mut self.inp, &mut rh)? < RECORD_HEADER_LEN {
            return Err(StreamError::Truncated { chunks: index });
        }
        let (flags, len) = parse_record_header(index, &rh)?;
        let last = flags & FLAG_FINAL != 0;
        self.rec.clear();
        self.rec.resize(RECORD_HEADER_LEN + len + TAG_LEN, 0);
        self.rec[..RECORD_HEADER_LEN].copy_from_slice(&rh);
        if read_full(&mut self.inp, &mut self.rec[RECORD_HEADER_LEN..])? < len + TAG_LEN {
            return Err(StreamError::Truncated { chunks: index });
        }
        let rec_len = self.rec.len() as u64;
        // The ciphertext is hashed before decryption overwrites it, but the digest state only
        // advances once the chunk has authenticated.
        let cipher_hash = self.digests.then(|| {
            let mut h = self.cipher_hash.clone();
            h.update(&self.rec);
            h
        });
        open_record(&self.keys, &self.header, index, flags, &mut self.rec)?;
        let plain = &self.rec[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len];
        if let Some(h) = cipher_hash {
            self.cipher_hash = h;
            self.plain_hash.update(plain);
        }
        self.plain_len += len as u64;
        self.cipher_len += rec_len;
        self.counter += 1;
        if last {
            self.finished = true;
            self.recovered = flags & FLAG_RECOVERED != 0;
            // The final chunk is accounted for above; anything after it is an error of its own.
            let mut probe = [0u8; 1];
            if read_full(&mut self.inp, &mut probe)? != 0 {
                return Err(StreamError::TrailingData);
            }
        }
        Ok(Some(&self.rec[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len]))
    }

    /// Bytes of the file made of the header and the chunks verified so far (the final chunk
    /// included once read, even if data follows it).
    pub fn verified_cipher_len(&self) -> u64 {
        self.cipher_len
    }

    pub fn chunks(&self) -> u64 {
        self.counter
    }

    /// The summary, once the final chunk has been read (and if digests were computed).
    pub fn summary(&self) -> Option<StreamSummary> {
        (self.finished && self.digests).then(|| StreamSummary {
            chunks: self.counter,
            plain_len: self.plain_len,
            cipher_len: self.cipher_len,
            plain_sha256: self.plain_hash.clone().finish(),
            cipher_sha256: self.cipher_hash.clone().finish(),
        })
    }

    /// Reads everything that is left, verifying it all, and returns the plaintext.
    pub fn read_to_end(mut self) -> Result<Zeroizing<Vec<u8>>, StreamError> {
        let mut out = Zeroizing::new(Vec::new());
        while let Some(chunk) = self.next_chunk()? {
            push_wiped(&mut out, chunk);
        }
        Ok(out)
    }

    /// Reads and verifies everything that is left, keeping no plaintext, and returns the
    /// summary with both digests.
    pub fn verify_to_end(mut self) -> Result<StreamSummary, StreamError> {
        assert!(self.digests, "verify_to_end needs digests");
        while self.next_chunk()?.is_some() {}
        Ok(self.summary().expect("the final chunk was read"))
    }
}

/// Appends to a plaintext buffer; when it must grow, the old allocation is wiped rather than
/// left behind in freed memory as `Vec`'s own reallocation would.
fn push_wiped(buf: &mut Zeroizing<Vec<u8>>, data: &[u8]) {
    if buf.capacity() - buf.len() < data.len() {
        let want = (buf.len() + data.len()).max(buf.capacity() * 2);
        let mut bigger = Zeroizing::new(Vec::with_capacity(want));
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(data);
}

/// The empty final record, flagged as written by crash recovery, that seals an object at chunk
/// `counter`. Recovery appends it after the last durable chunk of an object that was cut short.
/// Writing it twice (a crash during recovery) produces the same bytes under the same nonce.
pub fn recovery_final_record(data_key: &SecretKey, id: ObjectId, counter: u64) -> Vec<u8> {
    let keys = ObjectKeys::derive(data_key, id);
    let header = encode_header(id, &keys.commitment);
    let flags = FLAG_FINAL | FLAG_RECOVERED;
    let mut rec = record_header(flags, 0).to_vec();
    let aad = aad(&header, &rec);
    let tag = keys
        .cipher
        .encrypt_inout_detached(&nonce(counter, flags), &aad, (&mut [][..]).into())
        .expect("an empty chunk always encrypts");
    rec.extend_from_slice(&tag);
    rec
}

/// Where each chunk of an object lies, for reading at an offset without reading from the start.
#[derive(Clone, Debug)]
struct ChunkEntry {
    file_offset: u64,
    plain_offset: u64,
    len: usize,
    flags: u8,
}

/// Random access to a sealed object: the record headers are scanned once (without decrypting),
/// the final chunk is verified up front so truncation is never missed, and every chunk read is
/// verified before its plaintext is returned.
pub struct SeekableReader<R: Read + Seek> {
    inp: R,
    keys: ObjectKeys,
    header: [u8; HEADER_LEN],
    index: Vec<ChunkEntry>,
    rec: Zeroizing<Vec<u8>>,
}

impl<R: Read + Seek> SeekableReader<R> {
    pub fn open(mut inp: R, data_key: &SecretKey, expected: ObjectId) -> Result<Self, StreamError> {
        inp.seek(SeekFrom::Start(0))?;
        let (header, keys) = read_header(&mut inp, data_key, expected)?;
        let file_len = inp.seek(SeekFrom::End(0))?;
        let mut index = Vec::new();
        let mut file_offset = HEADER_LEN as u64;
        let mut plain_offset = 0u64;
        loop {
            let i = index.len() as u64;
            if file_offset + RECORD_HEADER_LEN as u64 > file_len {
                return Err(StreamError::Truncated { chunks: i });
            }
            inp.seek(SeekFrom::Start(file_offset))?;
            let mut rh = [0u8; RECORD_HEADER_LEN];
            inp.read_exact(&mut rh)?;
            let (flags, len) = parse_record_header(i, &rh)?;
            let last = flags & FLAG_FINAL != 0;
            let end = file_offset + (RECORD_HEADER_LEN + len + TAG_LEN) as u64;
            if end > file_len {
                return Err(StreamError::Truncated { chunks: i });
            }
            index.push(ChunkEntry {
                file_offset,
                plain_offset,
                len,
                flags,
            });
            plain_offset += len as u64;
            file_offset = end;
            if last {
                break;
            }
        }
        if file_offset != file_len {
            return Err(StreamError::TrailingData);
        }
        let mut reader = Self {
            inp,
            keys,
            header,
            index,
            rec: Zeroizing::new(Vec::with_capacity(RECORD_HEADER_LEN + CHUNK_SIZE + TAG_LEN)),
        };
        let last = reader.index.len() - 1;
        reader.read_chunk(last)?;
        Ok(reader)
    }

    pub fn chunk_count(&self) -> usize {
        self.index.len()
    }

    pub fn plain_len(&self) -> u64 {
        self.index
            .last()
            .map_or(0, |e| e.plain_offset + e.len as u64)
    }

    /// The verified plaintext of chunk `i`.
    pub fn read_chunk(&mut self, i: usize) -> Result<&[u8], StreamError> {
        let e = self.index[i].clone();
        self.rec.clear();
        self.rec.resize(RECORD_HEADER_LEN + e.len + TAG_LEN, 0);
        self.inp.seek(SeekFrom::Start(e.file_offset))?;
        self.inp.read_exact(&mut self.rec)?;
        open_record(&self.keys, &self.header, i as u64, e.flags, &mut self.rec)?;
        Ok(&self.rec[RECORD_HEADER_LEN..RECORD_HEADER_LEN + e.len])
    }

    /// Up to `len` bytes of plaintext from `offset`, reading only the chunks that hold them.
    pub fn read_at(&mut self, offset: u64, len: usize) -> Result<Zeroizing<Vec<u8>>, StreamError> {
        let mut out = Zeroizing::new(Vec::with_capacity(len.min(CHUNK_SIZE * 4)));
        let end = offset.saturating_add(len as u64).min(self.plain_len());
        let mut pos = offset;
        while pos < end {
            let i = self
                .index
                .partition_point(|e| e.plain_offset + e.len as u64 <= pos);
            let start = self.index[i].plain_offset;
            let chunk = self.read_chunk(i)?;
            let from = (pos - start) as usize;
            let to = ((end - start) as usize).min(chunk.len());
            push_wiped(&mut out, &chunk[from..to]);
            pos = start + to as u64;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    fn encrypt(key: &SecretKey, id: ObjectId, data: &[u8], flush_every: Option<usize>) -> Vec<u8> {
        let mut w = StreamWriter::new(Vec::new(), key, id).unwrap();
        match flush_every {
            None => w.append(data).unwrap(),
            Some(n) => {
                for piece in data.chunks(n.max(1)) {
                    w.append(piece).unwrap();
                    w.flush_chunk().unwrap();
                }
            }
        }
        let (out, summary) = w.finish().unwrap();
        assert_eq!(summary.plain_len, data.len() as u64);
        assert_eq!(summary.cipher_len, out.len() as u64);
        assert_eq!(summary.cipher_sha256, crypto::sha256(&out));
        assert_eq!(summary.plain_sha256, crypto::sha256(data));
        out
    }

    fn decrypt(key: &SecretKey, id: ObjectId, file: &[u8]) -> Result<Vec<u8>, StreamError> {
        let plain = StreamReader::open(Cursor::new(file), key, id)?
            .without_digests()
            .read_to_end()?;
        let summary = StreamReader::open(Cursor::new(file), key, id)?.verify_to_end()?;
        assert_eq!(summary.cipher_sha256, crypto::sha256(file));
        assert_eq!(summary.plain_sha256, crypto::sha256(&plain));
        Ok(plain.to_vec())
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    #[test]
    fn round_trips_at_chunk_boundaries() {
        let key = SecretKey::random();
        for n in [0, 1, 65535, 65536, 65537, 3 * 65536, 5 * 1024 * 1024 + 17] {
            let id = ObjectId::random();
            let data = pattern(n);
            let file = encrypt(&key, id, &data, None);
            assert_eq!(decrypt(&key, id, &file).unwrap(), data, "size {n}");
            let mut s = SeekableReader::open(Cursor::new(&file), &key, id).unwrap();
            assert_eq!(s.plain_len(), n as u64);
            let mid = n / 2;
            assert_eq!(
                &s.read_at(mid as u64, 70_000).unwrap()[..],
                &data[mid..(mid + 70_000).min(n)]
            );
        }
    }

    #[test]
    fn flushed_short_chunks_round_trip_and_seek() {
        let key = SecretKey::random();
        let id = ObjectId::random();
        let data = pattern(200_000);
        let file = encrypt(&key, id, &data, Some(7_777));
        assert_eq!(decrypt(&key, id, &file).unwrap(), data);
        let mut s = SeekableReader::open(Cursor::new(&file), &key, id).unwrap();
        assert_eq!(
            &s.read_at(150_001, 10).unwrap()[..],
            &data[150_001..150_011]
        );
        assert_eq!(s.read_at(199_995, 100).unwrap().len(), 5);
    }

    /// Splits a file into (header, records) by walking record headers.
    fn records(file: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut recs = Vec::new();
        let mut off = HEADER_LEN;
        while off < file.len() {
            let len = u32::from_be_bytes([0, file[off + 1], file[off + 2], file[off + 3]]) as usize;
            let end = off + RECORD_HEADER_LEN + len + TAG_LEN;
            recs.push(file[off..end].to_vec());
            off = end;
        }
        (file[..HEADER_LEN].to_vec(), recs)
    }

    fn join(header: &[u8], recs: &[Vec<u8>]) -> Vec<u8> {
        let mut f = header.to_vec();
        for r in recs {
            f.extend_from_slice(r);
        }
        f
    }

    #[test]
    fn every_damage_is_refused() {
        let key = SecretKey::random();
        let id = ObjectId::random();
        let data = pattern(3 * CHUNK_SIZE + 100);
        let file = encrypt(&key, id, &data, None);
        let (header, recs) = records(&file);
        assert_eq!(recs.len(), 4);

        let check = |f: &[u8], what: &str, want: fn(&StreamError) -> bool| {
            let err = decrypt(&key, id, f).expect_err(what);
            assert!(want(&err), "{what}: got {err}");
            let seek = SeekableReader::open(Cursor::new(f), &key, id).and_then(|mut s| {
                (0..s.chunk_count()).try_for_each(|i| s.read_chunk(i).map(|_| ()))
            });
            assert!(seek.is_err(), "{what}: seekable reader accepted it");
        };

        for pos in [
            HEADER_LEN + 2,
            HEADER_LEN + 10,
            file.len() / 2,
            file.len() - 1,
        ] {
            let mut f = file.clone();
            f[pos] ^= 0x40;
            check(&f, "flipped byte", |e| {
                matches!(
                    e,
                    StreamError::Authentication { .. }
                        | StreamError::ChunkTooLong { .. }
                        | StreamError::Truncated { .. }
                        | StreamError::TrailingData
                        | StreamError::UnknownFlags { .. }
                )
            });
        }
        let mut f = file.clone();
        f[40] ^= 1;
        check(&f, "flipped commitment", |e| {
            matches!(e, StreamError::WrongKey)
        });
        check(&file[..file.len() - 1], "truncated mid-record", |e| {
            matches!(e, StreamError::Truncated { .. })
        });
        check(&join(&header, &recs[..3]), "final chunk dropped", |e| {
            matches!(e, StreamError::Truncated { chunks: 3 })
        });
        check(
            &join(
                &header,
                &[
                    recs[1].clone(),
                    recs[0].clone(),
                    recs[2].clone(),
                    recs[3].clone(),
                ],
            ),
            "reordered",
            |e| matches!(e, StreamError::Authentication { index: 0 }),
        );
        check(
            &join(
                &header,
                &[
                    recs[0].clone(),
                    recs[0].clone(),
                    recs[1].clone(),
                    recs[2].clone(),
                    recs[3].clone(),
                ],
            ),
            "duplicated",
            |e| matches!(e, StreamError::Authentication { index: 1 }),
        );
        check(
            &join(
                &header,
                &[recs[0].clone(), recs[2].clone(), recs[3].clone()],
            ),
            "dropped middle chunk",
            |e| matches!(e, StreamError::Authentication { index: 1 }),
        );
        let mut f = file.clone();
        f.extend_from_slice(b"garbage");
        check(&f, "trailing data", |e| {
            matches!(e, StreamError::TrailingData)
        });
        check(&file[..10], "short header", |e| {
            matches!(e, StreamError::TruncatedHeader(10))
        });

        // A chunk lifted from another object under the same data key.
        let other_id = ObjectId::random();
        let other = encrypt(&key, other_id, &data, None);
        let (_, other_recs) = records(&other);
        check(
            &join(
                &header,
                &[
                    other_recs[0].clone(),
                    recs[1].clone(),
                    recs[2].clone(),
                    recs[3].clone(),
                ],
            ),
            "chunk from another object",
            |e| matches!(e, StreamError::Authentication { index: 0 }),
        );
        // The other object's whole file presented as this one.
        let err = decrypt(&key, id, &other).unwrap_err();
        assert!(matches!(err, StreamError::WrongObject { .. }), "{err}");
        // The right file with the wrong key.
        let err = decrypt(&SecretKey::random(), id, &file).unwrap_err();
        assert!(matches!(err, StreamError::WrongKey), "{err}");
    }

    #[test]
    fn oversized_and_flagged_records_are_refused_before_decrypting() {
        let key = SecretKey::random();
        let id = ObjectId::random();
        let file = encrypt(&key, id, b"hello", None);
        let mut f = file.clone();
        f[HEADER_LEN + 1] = 0x01; // length 65536 + 5
        assert!(matches!(
            decrypt(&key, id, &f),
            Err(StreamError::ChunkTooLong { .. })
        ));
        let mut f = file.clone();
        f[HEADER_LEN] = 0x80;
        assert!(matches!(
            decrypt(&key, id, &f),
            Err(StreamError::UnknownFlags { .. })
        ));
        let mut f = file;
        f[8] = 9;
        assert!(matches!(
            decrypt(&key, id, &f),
            Err(StreamError::UnsupportedVersion(0x0901))
        ));
    }

    #[test]
    fn recovery_seals_a_cut_stream_at_its_last_whole_chunk() {
        let key = SecretKey::random();
        let id = ObjectId::random();
        let mut w = StreamWriter::new(Vec::new(), &key, id).unwrap();
        w.append(b"first second ").unwrap();
        w.flush_chunk().unwrap();
        w.append(b"third").unwrap();
        w.flush_chunk().unwrap();
        let mut partial = w.get_ref().clone();
        partial.truncate(partial.len() - 3); // the last record was cut mid-write
        let mut r = StreamReader::open(Cursor::new(&partial), &key, id).unwrap();
        let mut got = Vec::new();
        let err = loop {
            match r.next_chunk() {
                Ok(Some(c)) => got.extend_from_slice(c),
                Ok(None) => panic!("a cut stream must not end cleanly"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, StreamError::Truncated { chunks: 1 }));
        let keep = r.verified_cipher_len() as usize;
        let chunks = r.chunks();
        let mut sealed = partial[..keep].to_vec();
        sealed.extend_from_slice(&recovery_final_record(&key, id, chunks));
        assert_eq!(decrypt(&key, id, &sealed).unwrap(), b"first second ");
        let mut r = StreamReader::open(Cursor::new(&sealed), &key, id).unwrap();
        while r.next_chunk().unwrap().is_some() {}
        assert!(r.sealed_by_recovery());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn codec_round_trips_any_append_pattern(
            pieces in proptest::collection::vec((0usize..140_000, any::<bool>()), 0..6),
        ) {
            let key = SecretKey::random();
            let id = ObjectId::random();
            let mut w = StreamWriter::new(Vec::new(), &key, id).unwrap();
            let mut all = Vec::new();
            for (n, flush) in pieces {
                let p = pattern(n);
                w.append(&p).unwrap();
                all.extend_from_slice(&p);
                if flush { w.flush_chunk().unwrap(); }
            }
            let (file, _) = w.finish().unwrap();
            prop_assert_eq!(decrypt(&key, id, &file).unwrap(), all);
        }

        #[test]
        fn no_single_byte_flip_yields_plaintext(pos in 0usize..1000, bit in 0u8..8) {
            let key = SecretKey::random();
            let id = ObjectId::random();
            let file = encrypt(&key, id, &pattern(700), Some(300));
            let mut f = file.clone();
            let pos = pos % f.len();
            f[pos] ^= 1 << bit;
            prop_assert!(decrypt(&key, id, &f).is_err());
        }
    }
}
