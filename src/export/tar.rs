//! A deterministic ustar writer and a strict, streaming ustar reader: the only tar features an
//! export bundle uses (regular files and directories, names up to 255 bytes). The reader refuses
//! everything else: links, devices, absolute names, `..`, duplicates, damaged headers.

use std::io::{self, Read, Write};

const BLOCK: usize = 512;
/// The largest member the reader accepts (8 GiB).
pub const MAX_MEMBER: u64 = 8 << 30;

fn octal(field: &mut [u8], value: u64) {
    let s = format!("{:0width$o}\0", value, width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

fn header(name: &str, size: u64, dir: bool, mtime: u64) -> io::Result<[u8; BLOCK]> {
    let mut h = [0u8; BLOCK];
    let bytes = name.as_bytes();
    let (prefix, rest) = if bytes.len() <= 100 {
        ("", name)
    } else {
        // Split at a '/' so that the prefix (155) and the name (100) both fit.
        let cut = name[..bytes.len().min(156)]
            .rfind('/')
            .filter(|i| bytes.len() - i - 1 <= 100)
            .ok_or_else(|| io::Error::other(format!("name too long for a tar header: {name}")))?;
        (&name[..cut], &name[cut + 1..])
    };
    h[..rest.len()].copy_from_slice(rest.as_bytes());
    octal(&mut h[100..108], if dir { 0o755 } else { 0o644 });
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[148..156].copy_from_slice(b"        ");
    h[156] = if dir { b'5' } else { b'0' };
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    Ok(h)
}

/// Writes members in the order given, every one owned by 0:0 with a fixed time.
pub struct Writer<W: Write> {
    out: W,
    mtime: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, mtime: u64) -> Self {
        Self { out, mtime }
    }

    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        self.out.write_all(&header(
            &format!("{}/", name.trim_end_matches('/')),
            0,
            true,
            self.mtime,
        )?)
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.out
            .write_all(&header(name, data.len() as u64, false, self.mtime)?)?;
        self.out.write_all(data)?;
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.out.write_all(&[0u8; BLOCK][..pad])
    }

    /// Two zero blocks end the archive.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; BLOCK * 2])?;
        Ok(self.out)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("the tar file is truncated")]
    Truncated,
    #[error("tar header at byte {0} is damaged (checksum)")]
    Checksum(u64),
    #[error("unsafe member name {0:?} (absolute, '..', or not UTF-8)")]
    UnsafeName(String),
    #[error("member {0:?} is a link, device or other special file")]
    Special(String),
    #[error("member {0:?} appears twice")]
    Duplicate(String),
    #[error("member {0:?} is larger than the limit")]
    TooLarge(String),
}

fn parse_octal(f: &[u8]) -> Option<u64> {
    let s: String = f
        .iter()
        .take_while(|b| **b != 0 && **b != b' ')
        .map(|b| *b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// One member as the reader hands it over.
pub enum Member<'a, R: Read> {
    Dir(String),
    File {
        name: String,
        size: u64,
        data: io::Take<&'a mut R>,
    },
}

/// Reads members one at a time; the caller consumes each file's data before asking for the next.
pub struct Reader<R: Read> {
    inp: R,
    offset: u64,
    pending_pad: u64,
    seen: std::collections::HashSet<String>,
    done: bool,
}

impl<R: Read> Reader<R> {
    pub fn new(inp: R) -> Self {
        Self {
            inp,
            offset: 0,
            pending_pad: 0,
            seen: Default::default(),
            done: false,
        }
    }

    fn read_block(&mut self, buf: &mut [u8; BLOCK]) -> Result<bool, TarError> {
        let mut filled = 0;
        while filled < BLOCK {
            let n = self.inp.read(&mut buf[filled..])?;
            if n == 0 {
                return if filled == 0 {
                    Ok(false)
                } else {
                    Err(TarError::Truncated)
                };
            }
            filled += n;
        }
        self.offset += BLOCK as u64;
        Ok(true)
    }

    /// The next member, or `None` at the end-of-archive marker.
    pub fn next_member(&mut self) -> Result<Option<Member<'_, R>>, TarError> {
        if self.done {
            return Ok(None);
        }
        if self.pending_pad > 0 {
            let mut skip = vec![0u8; self.pending_pad as usize];
            self.inp
                .read_exact(&mut skip)
                .map_err(|_| TarError::Truncated)?;
            self.offset += self.pending_pad;
            self.pending_pad = 0;
        }
        let mut h = [0u8; BLOCK];
        if !self.read_block(&mut h)? {
            return Err(TarError::Truncated);
        }
        if h.iter().all(|b| *b == 0) {
            let mut h2 = [0u8; BLOCK];
            if !self.read_block(&mut h2)? || h2.iter().any(|b| *b != 0) {
                return Err(TarError::Truncated);
            }
            self.done = true;
            return Ok(None);
        }
        let at = self.offset - BLOCK as u64;
        let stored = parse_octal(&h[148..156]).ok_or(TarError::Checksum(at))?;
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(*b)
                }
            })
            .sum();
        if stored != sum {
            return Err(TarError::Checksum(at));
        }
        let field = |r: std::ops::Range<usize>| {
            String::from_utf8(h[r].iter().take_while(|b| **b != 0).copied().collect())
        };
        let (name, prefix) = match (field(0..100), field(345..500)) {
            (Ok(n), Ok(p)) => (n, p),
            _ => return Err(TarError::UnsafeName("(not UTF-8)".into())),
        };
        let full = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let trimmed = full.trim_end_matches('/').to_string();
        if trimmed.is_empty()
            || trimmed.starts_with('/')
            || trimmed
                .split('/')
                .any(|c| c == ".." || c == "." || c.is_empty())
            || trimmed.contains('\\')
        {
            return Err(TarError::UnsafeName(full));
        }
        if !self.seen.insert(trimmed.clone()) {
            return Err(TarError::Duplicate(trimmed));
        }
        let size = parse_octal(&h[124..136]).ok_or(TarError::Checksum(at))?;
        match h[156] {
            b'5' => Ok(Some(Member::Dir(trimmed))),
            b'0' | 0 => {
                if size > MAX_MEMBER {
                    return Err(TarError::TooLarge(trimmed));
                }
                self.pending_pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
                self.offset += size;
                Ok(Some(Member::File {
                    name: trimmed,
                    size,
                    data: (&mut self.inp).take(size),
                }))
            }
            _ => Err(TarError::Special(trimmed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let mut w = Writer::new(Vec::new(), 1_700_000_000);
        w.dir("bag").unwrap();
        w.file("bag/a.txt", b"hello").unwrap();
        let long = format!("bag/{}/{}.bin", "d".repeat(120), "f".repeat(90));
        w.file(&long, &[7u8; 600]).unwrap();
        let tar = w.finish().unwrap();
        let mut r = Reader::new(&tar[..]);
        let mut names = Vec::new();
        while let Some(m) = r.next_member().unwrap() {
            match m {
                Member::Dir(n) => names.push(n),
                Member::File { name, mut data, .. } => {
                    let mut v = Vec::new();
                    data.read_to_end(&mut v).unwrap();
                    names.push(format!("{name}:{}", v.len()));
                }
            }
        }
        assert_eq!(
            names,
            [
                "bag".to_string(),
                "bag/a.txt:5".into(),
                format!("{long}:600")
            ]
        );
        // A member named with '..' is refused.
        let mut w = Writer::new(Vec::new(), 0);
        w.file("bag/../etc/passwd", b"x").unwrap();
        let evil = w.finish().unwrap();
        assert!(matches!(
            Reader::new(&evil[..]).next_member(),
            Err(TarError::UnsafeName(_))
        ));
        // Truncation and damage are named.
        let mut r = Reader::new(&tar[..700]);
        r.next_member().unwrap();
        let e = loop {
            match r.next_member() {
                Ok(Some(Member::File { mut data, .. })) => {
                    let mut v = Vec::new();
                    let _ = data.read_to_end(&mut v);
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("a truncated tar ended cleanly"),
                Err(e) => break e,
            }
        };
        assert!(matches!(e, TarError::Truncated), "{e}");
        let mut bad = tar.clone();
        bad[10] ^= 1;
        assert!(matches!(
            Reader::new(&bad[..]).next_member(),
            Err(TarError::Checksum(0))
        ));
    }
}
