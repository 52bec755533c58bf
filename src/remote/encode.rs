//! The client's encoder: compares each captured screen with the previous one in 64x64 tiles and
//! sends only the tiles that changed, losslessly (RGB compressed with DEFLATE, or raw when that
//! is no smaller). A large change that does not compress (a photo, a video) is sent instead as
//! one JPEG of its bounding rectangle, and the tiles it covered are sent again losslessly as soon
//! as they are still. A keyframe sends every tile losslessly. Pure.

use std::io::Write;

use flate2::Compression;
use flate2::write::DeflateEncoder;

use super::platform::Frame;
use super::{Codec, TILE, UpdateBuilder};

/// Target size of one message: small enough that a viewer draws a large change progressively.
const MESSAGE_TARGET: usize = 256 * 1024;
/// A change is photo-like when it covers at least this share of the tiles (and at least
/// `PHOTO_MIN_TILES`)...
const PHOTO_SHARE: f64 = 0.25;
const PHOTO_MIN_TILES: usize = 16;
/// ...and a sample of its tiles DEFLATEs to more than this share of their size.
const PHOTO_RATIO: f64 = 0.4;
/// JPEG quality for photo-like changes.
const JPEG_QUALITY: u8 = 75;

pub struct Encoder {
    width: u16,
    height: u16,
    frame: u32,
    /// The previous screen, tightly packed BGRx.
    prev: Vec<u8>,
    rgb: Vec<u8>,
    /// Tiles the viewer has only as JPEG, to be sent losslessly once still.
    lossy: Vec<bool>,
}

/// What one call to [`Encoder::encode`] produced.
pub struct Encoded {
    pub messages: Vec<Vec<u8>>,
    /// Tiles sent (a JPEG counts the tiles it covers).
    pub tiles: usize,
    /// Whether the change went as a JPEG.
    pub jpeg: bool,
}

impl Encoder {
    pub fn new() -> Self {
        Self {
            width: 0,
            height: 0,
            frame: 0,
            prev: Vec::new(),
            rgb: Vec::with_capacity(usize::from(TILE) * usize::from(TILE) * 3),
            lossy: Vec::new(),
        }
    }

    /// Encodes the tiles of `f` that differ from the previous call's screen, or all of them for
    /// a keyframe (and always when the screen size changed).
    pub fn encode(&mut self, f: &Frame<'_>, keyframe: bool) -> Encoded {
        let (w, h) = (usize::from(f.width), usize::from(f.height));
        let t = usize::from(TILE);
        let (cols, rows) = (w.div_ceil(t), h.div_ceil(t));
        let resized = (f.width, f.height) != (self.width, self.height);
        let keyframe = keyframe || resized;
        if resized {
            self.width = f.width;
            self.height = f.height;
            self.prev = vec![0; w * h * 4];
            self.lossy = vec![false; cols * rows];
        }
        self.frame = self.frame.wrapping_add(1);
        // Which tiles changed since the previous capture.
        let mut changed = vec![keyframe; cols * rows];
        if !keyframe {
            for (i, c) in changed.iter_mut().enumerate() {
                let (tx, ty) = ((i % cols) * t, (i / cols) * t);
                let (tw, th) = (t.min(w - tx), t.min(h - ty));
                *c = (ty..ty + th).any(|y| {
                    f.pixels[y * f.stride + tx * 4..][..tw * 4]
                        != self.prev[(y * w + tx) * 4..][..tw * 4]
                });
            }
        }
        let mut b = UpdateBuilder::new(self.frame, f.width, f.height, keyframe, MESSAGE_TARGET);
        let n_changed = changed.iter().filter(|c| **c).count();
        if !keyframe && self.photo_like(f, &changed, n_changed) {
            let tiles = self.send_jpeg(f, &changed, &mut b);
            return Encoded {
                messages: b.finish(),
                tiles,
                jpeg: true,
            };
        }
        let mut tiles = 0;
        for (i, &change) in changed.iter().enumerate() {
            // A tile held only as JPEG is sent losslessly once it is still.
            let refresh = self.lossy[i] && !change;
            if !(change || refresh) {
                continue;
            }
            self.lossy[i] = false;
            let (tx, ty) = ((i % cols) * t, (i / cols) * t);
            let (tw, th) = (t.min(w - tx), t.min(h - ty));
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
        Encoded {
            messages: b.finish(),
            tiles,
            jpeg: false,
        }
    }

    /// Whether a change is large and compresses badly, judged from a sample of its tiles.
    fn photo_like(&mut self, f: &Frame<'_>, changed: &[bool], n: usize) -> bool {
        if n < PHOTO_MIN_TILES || (n as f64) < PHOTO_SHARE * changed.len() as f64 {
            return false;
        }
        let (w, h, t) = (
            usize::from(f.width),
            usize::from(f.height),
            usize::from(TILE),
        );
        let cols = w.div_ceil(t);
        let (mut raw, mut packed) = (0usize, 0usize);
        for i in changed
            .iter()
            .enumerate()
            .filter(|(_, c)| **c)
            .map(|(i, _)| i)
            .step_by((n / 8).max(1))
        {
            let (tx, ty) = ((i % cols) * t, (i / cols) * t);
            let (tw, th) = (t.min(w - tx), t.min(h - ty));
            self.rgb.clear();
            for y in ty..ty + th {
                for px in f.pixels[y * f.stride + tx * 4..][..tw * 4].chunks_exact(4) {
                    self.rgb.extend_from_slice(&[px[2], px[1], px[0]]);
                }
            }
            raw += self.rgb.len();
            packed += deflate(&self.rgb).map_or(self.rgb.len(), |d| d.len());
        }
        packed as f64 > PHOTO_RATIO * raw as f64
    }

    /// Sends the bounding rectangle of the changed tiles as one JPEG; returns the tiles covered.
    fn send_jpeg(&mut self, f: &Frame<'_>, changed: &[bool], b: &mut UpdateBuilder) -> usize {
        let (w, h, t) = (
            usize::from(f.width),
            usize::from(f.height),
            usize::from(TILE),
        );
        let cols = w.div_ceil(t);
        let idx = changed
            .iter()
            .enumerate()
            .filter(|(_, c)| **c)
            .map(|(i, _)| i);
        let (mut c0, mut r0, mut c1, mut r1) = (usize::MAX, usize::MAX, 0, 0);
        for i in idx {
            let (c, r) = (i % cols, i / cols);
            (c0, r0, c1, r1) = (c0.min(c), r0.min(r), c1.max(c), r1.max(r));
        }
        let (x, y) = (c0 * t, r0 * t);
        let (rw, rh) = (((c1 + 1) * t).min(w) - x, ((r1 + 1) * t).min(h) - y);
        let mut bgra = Vec::with_capacity(rw * rh * 4);
        for row in y..y + rh {
            let src = &f.pixels[row * f.stride + x * 4..][..rw * 4];
            self.prev[(row * w + x) * 4..][..rw * 4].copy_from_slice(src);
            bgra.extend_from_slice(src);
        }
        let mut jpeg = Vec::with_capacity(rw * rh / 4);
        let encoded = jpeg_encoder::Encoder::new(&mut jpeg, JPEG_QUALITY).encode(
            &bgra,
            rw as u16,
            rh as u16,
            jpeg_encoder::ColorType::Bgra,
        );
        if encoded.is_err() {
            // Cannot happen for these sizes; fall back to a lossless refresh of the rectangle.
            jpeg.clear();
        }
        let mut covered = 0;
        for r in r0..=r1 {
            for c in c0..=c1 {
                self.lossy[r * cols + c] = !jpeg.is_empty();
                covered += 1;
            }
        }
        if !jpeg.is_empty() {
            b.push(x as u16, y as u16, rw as u16, rh as u16, Codec::Jpeg, &jpeg);
        }
        covered
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
                    // A stand-in for the JPEG's pixels: only a lossless refresh makes the
                    // canvas exact again.
                    Codec::Jpeg => {
                        assert_eq!(&t.data[..2], &[0xff, 0xd8], "a JPEG");
                        vec![0; usize::from(t.w) * usize::from(t.h) * 3]
                    }
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
    fn a_photo_goes_as_one_jpeg_then_losslessly_once_still() {
        let (w, h) = (640usize, 384usize);
        let mut enc = Encoder::new();
        let mut canvas = Vec::new();
        let text = vec![0xffu8; w * h * 4];
        apply(
            &mut canvas,
            &enc.encode(&frame(w, h, &text), false).messages,
        );
        // Noise over the lower half: large and incompressible.
        let mut photo = text.clone();
        let mut x = 0x1234_5678u32;
        for p in photo[w * 4 * 192..].iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *p = x as u8;
        }
        let e = enc.encode(&frame(w, h, &photo), false);
        assert!(e.jpeg, "photo-like");
        assert_eq!(e.tiles, 10 * 3, "the bounding rectangle's tiles");
        let Message::Update(u) = parse(&e.messages[0]).unwrap() else {
            panic!()
        };
        assert_eq!(u.tiles.len(), 1);
        assert_eq!(
            (u.tiles[0].x, u.tiles[0].y, u.tiles[0].w, u.tiles[0].h),
            (0, 192, 640, 192)
        );
        apply(&mut canvas, &e.messages);
        assert_ne!(canvas, rgb_of(&photo));
        // Still: the same tiles again, losslessly; then the canvas is exact and nothing follows.
        let refresh = enc.encode(&frame(w, h, &photo), false);
        assert!(!refresh.jpeg);
        assert_eq!(refresh.tiles, 30);
        apply(&mut canvas, &refresh.messages);
        assert_eq!(canvas, rgb_of(&photo));
        assert!(enc.encode(&frame(w, h, &photo), false).messages.is_empty());
        // Typing (a small change) never goes as JPEG.
        let mut typed = photo.clone();
        typed[(10 * w + 10) * 4] ^= 0xff;
        assert!(!enc.encode(&frame(w, h, &typed), false).jpeg);
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
