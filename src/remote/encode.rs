//! The client's encoder: compares each captured screen with the previous one in 64x64 tiles and
//! sends only the tiles that changed, losslessly (RGB compressed with DEFLATE, or raw when that
//! is no smaller). A keyframe sends every tile. Pure.

use std::io::Write;

use flate2::Compression;
use flate2::write::DeflateEncoder;

use super::platform::Frame;
use super::{Codec, TILE, UpdateBuilder};

/// Target size of one message: small enough that a viewer draws a large change progressively.
const MESSAGE_TARGET: usize = 256 * 1024;

pub struct Encoder {
    width: u16,
    height: u16,
    frame: u32,
    /// The previous screen, tightly packed BGRx.
    prev: Vec<u8>,
    rgb: Vec<u8>,
}

/// What one call to [`Encoder::encode`] produced.
pub struct Encoded {
    pub messages: Vec<Vec<u8>>,
    pub tiles: usize,
}

impl Encoder {
    pub fn new() -> Self {
        Self {
            width: 0,
            height: 0,
            frame: 0,
            prev: Vec::new(),
            rgb: Vec::with_capacity(usize::from(TILE) * usize::from(TILE) * 3),
        }
    }

    /// Encodes the tiles of `f` that differ from the previous call's screen, or all of them for
    /// a keyframe (and always when the screen size changed).
    pub fn encode(&mut self, f: &Frame<'_>, keyframe: bool) -> Encoded {
        let (w, h) = (usize::from(f.width), usize::from(f.height));
        let resized = (f.width, f.height) != (self.width, self.height);
        let keyframe = keyframe || resized;
        if resized {
            self.width = f.width;
            self.height = f.height;
            self.prev = vec![0; w * h * 4];
        }
        self.frame = self.frame.wrapping_add(1);
        let mut b = UpdateBuilder::new(self.frame, f.width, f.height, keyframe, MESSAGE_TARGET);
        let mut tiles = 0;
        let t = usize::from(TILE);
        for ty in (0..h).step_by(t) {
            for tx in (0..w).step_by(t) {
                let (tw, th) = (t.min(w - tx), t.min(h - ty));
                let changed = keyframe
                    || (ty..ty + th).any(|y| {
                        let src = &f.pixels[y * f.stride + tx * 4..][..tw * 4];
                        let old = &self.prev[(y * w + tx) * 4..][..tw * 4];
                        src != old
                    });
                if !changed {
                    continue;
                }
                self.rgb.clear();
                for y in ty..ty + th {
                    let src = &f.pixels[y * f.stride + tx * 4..][..tw * 4];
                    self.prev[(y * w + tx) * 4..][..tw * 4].copy_from_slice(src);
                    for px in src.chunks_exact(4) {
                        self.rgb.extend_from_slice(&[px[2], px[1], px[0]]);
                    }
                }
                let packed = deflate(&self.rgb);
                let (codec, data) = match &packed {
                    Some(d) if d.len() < self.rgb.len() => (Codec::Deflate, d.as_slice()),
                    _ => (Codec::Raw, self.rgb.as_slice()),
                };
                // Tile coordinates fit in u16: the screen's sides do.
                b.push(tx as u16, ty as u16, tw as u16, th as u16, codec, data);
                tiles += 1;
            }
        }
        Encoded {
            messages: b.finish(),
            tiles,
        }
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

fn deflate(data: &[u8]) -> Option<Vec<u8>> {
    let mut e = DeflateEncoder::new(Vec::with_capacity(data.len() / 4), Compression::fast());
    e.write_all(data).ok()?;
    e.finish().ok()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::remote::{Message, parse};

    /// Applies messages to an RGB canvas, as the agent's page does.
    fn apply(canvas: &mut Vec<u8>, msgs: &[Vec<u8>]) -> (u16, u16) {
        let mut size = (0, 0);
        for m in msgs {
            let Message::Update(u) = parse(m).unwrap() else {
                continue;
            };
            size = (u.width, u.height);
            canvas.resize(usize::from(u.width) * usize::from(u.height) * 3, 0);
            for t in u.tiles {
                let rgb = match t.codec {
                    Codec::Raw => t.data.to_vec(),
                    Codec::Deflate => {
                        let mut out = Vec::new();
                        flate2::read::DeflateDecoder::new(t.data)
                            .read_to_end(&mut out)
                            .unwrap();
                        out
                    }
                };
                assert_eq!(rgb.len(), usize::from(t.w) * usize::from(t.h) * 3);
                for row in 0..usize::from(t.h) {
                    let dst =
                        ((usize::from(t.y) + row) * usize::from(u.width) + usize::from(t.x)) * 3;
                    let src = row * usize::from(t.w) * 3;
                    canvas[dst..dst + usize::from(t.w) * 3]
                        .copy_from_slice(&rgb[src..src + usize::from(t.w) * 3]);
                }
            }
        }
        size
    }

    fn screen(w: usize, h: usize, seed: u8) -> Vec<u8> {
        (0..w * h * 4)
            .map(|i| (i as u8).wrapping_mul(seed))
            .collect()
    }

    fn rgb_of(bgrx: &[u8]) -> Vec<u8> {
        bgrx.chunks_exact(4)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect()
    }

    #[test]
    fn the_viewer_rebuilds_the_screen_exactly() {
        let (w, h) = (200usize, 130usize);
        let mut enc = Encoder::new();
        let mut canvas = Vec::new();
        let mut s = screen(w, h, 3);
        let first = enc.encode(&frame(w, h, &s), false);
        // The first frame is a keyframe with every tile (4 x 3 tiles for 200x130).
        assert_eq!(first.tiles, 12);
        assert_eq!(first.messages[0][2] & crate::remote::FLAG_KEYFRAME, 1);
        assert_eq!(apply(&mut canvas, &first.messages), (200, 130));
        assert_eq!(canvas, rgb_of(&s));
        // Nothing changed: nothing is sent.
        assert!(enc.encode(&frame(w, h, &s), false).messages.is_empty());
        // One pixel changes: one tile is sent.
        s[(70 * w + 150) * 4] ^= 0xff;
        let one = enc.encode(&frame(w, h, &s), false);
        assert_eq!(one.tiles, 1);
        apply(&mut canvas, &one.messages);
        assert_eq!(canvas, rgb_of(&s));
        // A keyframe resends everything.
        assert_eq!(enc.encode(&frame(w, h, &s), true).tiles, 12);
    }

    fn frame(w: usize, h: usize, pixels: &[u8]) -> Frame<'_> {
        Frame {
            width: w as u16,
            height: h as u16,
            stride: w * 4,
            pixels,
        }
    }

    #[test]
    fn a_padded_stride_is_respected() {
        let (w, h, stride) = (70usize, 10usize, 70 * 4 + 24);
        let mut padded = vec![0xeeu8; stride * h];
        let s = screen(w, h, 7);
        for y in 0..h {
            padded[y * stride..y * stride + w * 4].copy_from_slice(&s[y * w * 4..(y + 1) * w * 4]);
        }
        let mut enc = Encoder::new();
        let f = Frame {
            width: w as u16,
            height: h as u16,
            stride,
            pixels: &padded,
        };
        let mut canvas = Vec::new();
        apply(&mut canvas, &enc.encode(&f, false).messages);
        assert_eq!(canvas, rgb_of(&s));
    }
}
