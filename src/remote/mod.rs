//! Remote view and control: the screen protocol that the native client, the relay, the agent's
//! page and the recording share (docs/formats/recording.md). This module is pure: parsing and
//! building screen messages, validating the viewer's input events, and the consent a user gave.
//! The X11 backend and the client's run loop live in the submodules.

pub mod client;
pub mod collect;
pub mod encode;
pub mod keys;
pub mod platform;
pub mod x11;

use serde::{Deserialize, Serialize};

/// Version byte at the start of every binary screen message.
pub const VERSION: u8 = 1;
/// The largest binary screen message the relay accepts; the client splits larger updates.
pub const MAX_MESSAGE: usize = 2 * 1024 * 1024;
/// The largest screen side accepted, in pixels.
pub const MAX_DIM: u16 = 8192;
/// The most tiles one message may carry.
pub const MAX_TILES: usize = 4096;
/// Side of a lossless tile, in pixels.
pub const TILE: u16 = 64;

const KIND_UPDATE: u8 = 1;
const KIND_CURSOR: u8 = 2;
const KIND_MEDIA: u8 = 3;
/// Media flag: this chunk starts a new WebM stream (its header; the viewer starts over).
pub const MEDIA_START: u8 = 1;
const UPDATE_HEADER: usize = 14;
const TILE_HEADER: usize = 14;

/// Flag: the first message of a keyframe (every tile of the screen follows).
pub const FLAG_KEYFRAME: u8 = 1;
/// Flag: the last message of a frame (the viewer may present it).
pub const FLAG_END: u8 = 2;

/// How a tile's pixels are coded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// `w * h * 3` bytes of RGB, row by row.
    Raw = 0,
    /// The same RGB bytes, compressed with raw DEFLATE (RFC 1951).
    Deflate = 1,
    /// A baseline JPEG of the rectangle (lossy: for photo-like changes, refreshed losslessly
    /// once the region is still).
    Jpeg = 2,
}

impl Codec {
    fn from_u8(b: u8) -> Option<Codec> {
        match b {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Deflate),
            2 => Some(Codec::Jpeg),
            _ => None,
        }
    }
}

/// One rectangle of pixels in an update.
#[derive(Debug, PartialEq, Eq)]
pub struct Tile<'a> {
    pub x: u16,
    pub y: u16,
    pub w: u16,
    pub h: u16,
    pub codec: Codec,
    pub data: &'a [u8],
}

/// A screen update: some tiles of frame `frame` of a `width` x `height` screen.
#[derive(Debug, PartialEq, Eq)]
pub struct Update<'a> {
    pub flags: u8,
    pub frame: u32,
    pub width: u16,
    pub height: u16,
    pub tiles: Vec<Tile<'a>>,
}

impl Update<'_> {
    pub fn keyframe(&self) -> bool {
        self.flags & FLAG_KEYFRAME != 0
    }
}

/// A binary screen message.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Update(Update<'a>),
    /// Where the user's pointer is.
    Cursor {
        x: u16,
        y: u16,
    },
    /// A chunk of a browser's screen share: WebM as `MediaRecorder` produced it.
    Media {
        start: bool,
        data: &'a [u8],
    },
}

/// Why a binary screen message was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("screen message is {0} bytes; the limit is {MAX_MESSAGE}")]
    TooLarge(usize),
    #[error("screen message is truncated")]
    Truncated,
    #[error("screen message version {0} is not supported (expected {VERSION})")]
    Version(u8),
    #[error("unknown screen message kind {0}")]
    Kind(u8),
    #[error("unknown flags {0:#x}")]
    Flags(u8),
    #[error("screen size {0}x{1} is out of range (1..={MAX_DIM} each way)")]
    Size(u16, u16),
    #[error("{0} tiles in one message; the limit is {MAX_TILES}")]
    TooManyTiles(usize),
    #[error("tile {0} ({1},{2} {3}x{4}) lies outside the {5}x{6} screen")]
    TileBounds(usize, u16, u16, u16, u16, u16, u16),
    #[error("tile {0} has unknown codec {1}")]
    Codec(usize, u8),
    #[error("tile {0} is raw but holds {1} bytes instead of {2}")]
    RawLength(usize, usize, usize),
    #[error("{0} bytes follow the last tile")]
    Trailing(usize),
    #[error("cursor {0},{1} is outside the screen")]
    CursorBounds(u16, u16),
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, FrameError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(FrameError::Truncated)
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, FrameError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(FrameError::Truncated)
}

/// Parses and checks a binary screen message: every length and rectangle is validated, so a
/// message that parses can be relayed, recorded and drawn without further checks on its
/// structure. (Compressed tiles are decompressed, and their size checked, by whoever draws them.)
pub fn parse(b: &[u8]) -> Result<Message<'_>, FrameError> {
    if b.len() > MAX_MESSAGE {
        return Err(FrameError::TooLarge(b.len()));
    }
    let (&version, rest) = b.split_first().ok_or(FrameError::Truncated)?;
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let &kind = rest.first().ok_or(FrameError::Truncated)?;
    match kind {
        KIND_CURSOR => {
            if b.len() < 8 {
                return Err(FrameError::Truncated);
            }
            if b.len() > 8 {
                return Err(FrameError::Trailing(b.len() - 8));
            }
            Ok(Message::Cursor {
                x: u16_at(b, 4)?,
                y: u16_at(b, 6)?,
            })
        }
        KIND_UPDATE => parse_update(b).map(Message::Update),
        KIND_MEDIA => {
            if b.len() <= 4 {
                return Err(FrameError::Truncated);
            }
            if b[2] & !MEDIA_START != 0 || b[3] != 0 {
                return Err(FrameError::Flags(b[2]));
            }
            Ok(Message::Media {
                start: b[2] & MEDIA_START != 0,
                data: &b[4..],
            })
        }
        k => Err(FrameError::Kind(k)),
    }
}

fn parse_update(b: &[u8]) -> Result<Update<'_>, FrameError> {
    if b.len() < UPDATE_HEADER {
        return Err(FrameError::Truncated);
    }
    let flags = b[2];
    if flags & !(FLAG_KEYFRAME | FLAG_END) != 0 {
        return Err(FrameError::Flags(flags));
    }
    let frame = u32_at(b, 4)?;
    let (width, height) = (u16_at(b, 8)?, u16_at(b, 10)?);
    if width == 0 || height == 0 || width > MAX_DIM || height > MAX_DIM {
        return Err(FrameError::Size(width, height));
    }
    let n = usize::from(u16_at(b, 12)?);
    if n > MAX_TILES {
        return Err(FrameError::TooManyTiles(n));
    }
    let mut tiles = Vec::with_capacity(n);
    let mut at = UPDATE_HEADER;
    for i in 0..n {
        let h = b.get(at..at + TILE_HEADER).ok_or(FrameError::Truncated)?;
        let (x, y, w, th) = (u16_at(h, 0)?, u16_at(h, 2)?, u16_at(h, 4)?, u16_at(h, 6)?);
        if w == 0
            || th == 0
            || u32::from(x) + u32::from(w) > u32::from(width)
            || u32::from(y) + u32::from(th) > u32::from(height)
        {
            return Err(FrameError::TileBounds(i, x, y, w, th, width, height));
        }
        let codec = Codec::from_u8(h[8]).ok_or(FrameError::Codec(i, h[8]))?;
        let len = u32_at(h, 10)? as usize;
        at += TILE_HEADER;
        let data = b.get(at..at + len).ok_or(FrameError::Truncated)?;
        at += len;
        let raw = usize::from(w) * usize::from(th) * 3;
        if codec == Codec::Raw && len != raw {
            return Err(FrameError::RawLength(i, len, raw));
        }
        tiles.push(Tile {
            x,
            y,
            w,
            h: th,
            codec,
            data,
        });
    }
    if at != b.len() {
        return Err(FrameError::Trailing(b.len() - at));
    }
    Ok(Update {
        flags,
        frame,
        width,
        height,
        tiles,
    })
}

/// Builds the message for a cursor position.
pub fn cursor_message(x: u16, y: u16) -> Vec<u8> {
    let mut m = vec![VERSION, KIND_CURSOR, 0, 0];
    m.extend_from_slice(&x.to_le_bytes());
    m.extend_from_slice(&y.to_le_bytes());
    m
}

/// Collects the tiles of one frame into messages of at most `limit` bytes.
pub struct UpdateBuilder {
    frame: u32,
    width: u16,
    height: u16,
    keyframe: bool,
    limit: usize,
    current: Vec<u8>,
    count: u16,
    done: Vec<Vec<u8>>,
}

impl UpdateBuilder {
    pub fn new(frame: u32, width: u16, height: u16, keyframe: bool, limit: usize) -> Self {
        let mut b = Self {
            frame,
            width,
            height,
            keyframe,
            limit: limit.clamp(UPDATE_HEADER + TILE_HEADER + 1, MAX_MESSAGE),
            current: Vec::new(),
            count: 0,
            done: Vec::new(),
        };
        b.start();
        b
    }

    fn start(&mut self) {
        let first = self.done.is_empty() && self.keyframe;
        self.current.clear();
        self.current.extend_from_slice(&[
            VERSION,
            KIND_UPDATE,
            if first { FLAG_KEYFRAME } else { 0 },
            0,
        ]);
        self.current.extend_from_slice(&self.frame.to_le_bytes());
        self.current.extend_from_slice(&self.width.to_le_bytes());
        self.current.extend_from_slice(&self.height.to_le_bytes());
        self.current.extend_from_slice(&0u16.to_le_bytes());
        self.count = 0;
    }

    fn close(&mut self) {
        self.current[12..14].copy_from_slice(&self.count.to_le_bytes());
        self.done.push(std::mem::take(&mut self.current));
        self.start();
    }

    /// Adds a tile; `data` must fit in one message (the caller sends oversized tiles raw in
    /// smaller pieces, which a 64x64 tile always is).
    pub fn push(&mut self, x: u16, y: u16, w: u16, h: u16, codec: Codec, data: &[u8]) {
        let need = TILE_HEADER + data.len();
        if self.count > 0
            && (self.current.len() + need > self.limit || usize::from(self.count) >= MAX_TILES)
        {
            self.close();
        }
        for v in [x, y, w, h] {
            self.current.extend_from_slice(&v.to_le_bytes());
        }
        self.current.push(codec as u8);
        self.current.push(0);
        self.current
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.current.extend_from_slice(data);
        self.count += 1;
    }

    /// The messages of this frame; the last carries [`FLAG_END`]. A frame without tiles yields
    /// nothing.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        if self.count > 0 {
            self.close();
        }
        if let Some(last) = self.done.last_mut() {
            last[2] |= FLAG_END;
        }
        self.done
    }
}

/// What the user allowed the agent to do, each revocable at any moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    pub view: bool,
    pub control: bool,
    pub files: bool,
    pub diagnostics: bool,
    pub reboot: bool,
}

impl Consent {
    pub const NAMES: [&'static str; 5] = ["view", "control", "files", "diagnostics", "reboot"];

    /// Parses a comma-separated list such as `view,control`.
    pub fn parse_list(s: &str) -> Result<Consent, String> {
        let mut c = Consent::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            *c.flag_mut(part).ok_or_else(|| {
                format!(
                    "unknown capability {part:?}; expected some of {}",
                    Self::NAMES.join(", ")
                )
            })? = true;
        }
        Ok(c)
    }

    /// Everything either grants.
    pub fn or(self, o: Consent) -> Consent {
        Consent {
            view: self.view || o.view,
            control: self.control || o.control,
            files: self.files || o.files,
            diagnostics: self.diagnostics || o.diagnostics,
            reboot: self.reboot || o.reboot,
        }
    }

    pub fn flag_mut(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "view" => &mut self.view,
            "control" => &mut self.control,
            "files" => &mut self.files,
            "diagnostics" => &mut self.diagnostics,
            "reboot" => &mut self.reboot,
            _ => return None,
        })
    }

    pub fn list(&self) -> String {
        let on = [
            self.view,
            self.control,
            self.files,
            self.diagnostics,
            self.reboot,
        ];
        let v: Vec<&str> = Self::NAMES
            .iter()
            .zip(on)
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect();
        if v.is_empty() {
            "nothing".into()
        } else {
            v.join(", ")
        }
    }
}

/// The most points in one whiteboard stroke.
pub const MAX_STROKE: usize = 1000;
/// The colours an agent may draw with.
pub const INK: [&str; 4] = ["#e00000", "#0050e0", "#00a000", "#f0c000"];

/// A whiteboard annotation from the agent, drawn over the user's screen (not an input: it
/// needs no control, and the user's desktop ignores it but shows it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Annotation {
    /// A line through `points` (screen pixels) in `color` (one of [`INK`]).
    Stroke {
        points: Vec<[u16; 2]>,
        color: String,
    },
    /// Remove every annotation.
    Clear,
}

impl Annotation {
    /// Parses an `annotate` message (its `type` field removed) and checks it against the screen.
    pub fn parse(mut v: serde_json::Value, width: u16, height: u16) -> Result<Annotation, String> {
        if let Some(o) = v.as_object_mut() {
            o.remove("type");
        }
        let a: Annotation =
            serde_json::from_value(v).map_err(|e| format!("bad annotation: {e}"))?;
        if let Annotation::Stroke { points, color } = &a {
            if points.is_empty() || points.len() > MAX_STROKE {
                return Err(format!("a stroke has 1 to {MAX_STROKE} points"));
            }
            if let Some([x, y]) = points.iter().find(|[x, y]| *x >= width || *y >= height) {
                return Err(format!(
                    "point {x},{y} is outside the {width}x{height} screen"
                ));
            }
            if !INK.contains(&color.as_str()) {
                return Err(format!("colour {color:?} is not one of {}", INK.join(", ")));
            }
        }
        Ok(a)
    }
}

/// A pointer or keyboard event from the agent, relayed to the client only while the user has
/// granted control.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "lowercase", deny_unknown_fields)]
pub enum Input {
    /// Pointer to `x`,`y` (screen pixels).
    Move { x: u16, y: u16 },
    /// Button 1-3 (left, middle, right) or 4-7 (wheel up, down, left, right) at `x`,`y`.
    Button {
        button: u8,
        down: bool,
        x: u16,
        y: u16,
    },
    /// A key by its name as browsers give it (`KeyboardEvent.key`: `a`, `A`, `Enter`,
    /// `Control`, `F5`, ...).
    Key { key: String, down: bool },
}

impl Input {
    /// Parses an `input` message (its `type` field removed) and checks it against the screen.
    pub fn parse(mut v: serde_json::Value, width: u16, height: u16) -> Result<Input, String> {
        if let Some(o) = v.as_object_mut() {
            o.remove("type");
        }
        let i: Input = serde_json::from_value(v).map_err(|e| format!("bad input event: {e}"))?;
        match &i {
            Input::Move { x, y } | Input::Button { x, y, .. } if *x >= width || *y >= height => {
                return Err(format!(
                    "pointer position {x},{y} is outside the {width}x{height} screen"
                ));
            }
            Input::Button { button, .. } if !(1..=7).contains(button) => {
                return Err(format!("button {button} is not 1-7"));
            }
            Input::Key { key, .. } if keys::keysym(key).is_none() => {
                return Err(format!("unknown key {key:?}"));
            }
            _ => {}
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TileSpec = (u16, u16, u16, u16, Codec, Vec<u8>);

    fn frame(tiles: &[TileSpec], limit: usize) -> Vec<Vec<u8>> {
        let mut b = UpdateBuilder::new(7, 200, 100, true, limit);
        for (x, y, w, h, c, d) in tiles {
            b.push(*x, *y, *w, *h, *c, d);
        }
        b.finish()
    }

    #[test]
    fn built_messages_parse_back() {
        let raw = vec![9u8; 64 * 36 * 3];
        let msgs = frame(
            &[
                (0, 0, 64, 36, Codec::Raw, raw.clone()),
                (64, 64, 64, 36, Codec::Deflate, vec![1, 2, 3]),
            ],
            MAX_MESSAGE,
        );
        assert_eq!(msgs.len(), 1);
        let Message::Update(u) = parse(&msgs[0]).unwrap() else {
            panic!("not an update")
        };
        assert_eq!(u.flags, FLAG_KEYFRAME | FLAG_END);
        assert_eq!((u.frame, u.width, u.height), (7, 200, 100));
        assert_eq!(u.tiles.len(), 2);
        assert_eq!(u.tiles[0].data, &raw[..]);
        assert_eq!(u.tiles[1].codec, Codec::Deflate);
        assert_eq!(
            parse(&cursor_message(5, 6)).unwrap(),
            Message::Cursor { x: 5, y: 6 }
        );
        assert_eq!(
            parse(&[1, 3, 1, 0, 0x1a, 0x45]).unwrap(),
            Message::Media {
                start: true,
                data: &[0x1a, 0x45]
            }
        );
        assert_eq!(parse(&[1, 3, 0, 0]), Err(FrameError::Truncated));
        assert_eq!(parse(&[1, 3, 4, 0, 9]), Err(FrameError::Flags(4)));
    }

    #[test]
    fn a_frame_is_split_at_the_limit_and_only_the_first_part_is_a_keyframe() {
        let tiles: Vec<_> = (0..10)
            .map(|i| (i * 10, 0, 10, 10, Codec::Raw, vec![0u8; 300]))
            .collect();
        let msgs = frame(&tiles, 1000);
        assert!(msgs.len() > 3);
        let flags: Vec<u8> = msgs.iter().map(|m| m[2]).collect();
        assert_eq!(flags[0], FLAG_KEYFRAME);
        assert!(flags[1..flags.len() - 1].iter().all(|f| *f == 0));
        assert_eq!(*flags.last().unwrap(), FLAG_END);
        let total: usize = msgs
            .iter()
            .map(|m| match parse(m).unwrap() {
                Message::Update(u) => u.tiles.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(total, 10);
    }

    #[test]
    fn bad_messages_are_refused_with_what_is_wrong() {
        let good = frame(&[(0, 0, 2, 2, Codec::Raw, vec![0; 12])], MAX_MESSAGE).remove(0);
        assert_eq!(parse(&[]), Err(FrameError::Truncated));
        assert_eq!(parse(&[2, 1]), Err(FrameError::Version(2)));
        assert_eq!(parse(&[1, 9]), Err(FrameError::Kind(9)));
        let mut m = good.clone();
        m[2] = 0x80;
        assert_eq!(parse(&m), Err(FrameError::Flags(0x80)));
        let mut m = good.clone();
        m[8..10].copy_from_slice(&0u16.to_le_bytes());
        assert!(matches!(parse(&m), Err(FrameError::Size(0, 100))));
        let mut m = good.clone();
        m[8..10].copy_from_slice(&60000u16.to_le_bytes());
        assert!(matches!(parse(&m), Err(FrameError::Size(60000, 100))));
        // A tile that reaches past the right edge.
        let mut m = good.clone();
        m[14..16].copy_from_slice(&199u16.to_le_bytes());
        assert!(matches!(parse(&m), Err(FrameError::TileBounds(0, 199, ..))));
        let mut m = good.clone();
        m[22] = 7;
        assert_eq!(parse(&m), Err(FrameError::Codec(0, 7)));
        // JPEG tiles have no fixed length.
        let jpeg = frame(
            &[(0, 0, 200, 100, Codec::Jpeg, vec![0xff, 0xd8, 1])],
            MAX_MESSAGE,
        )
        .remove(0);
        assert!(parse(&jpeg).is_ok());
        let mut m = good.clone();
        m.truncate(m.len() - 1);
        assert_eq!(parse(&m), Err(FrameError::Truncated));
        let mut m = good.clone();
        m.push(0);
        assert_eq!(parse(&m), Err(FrameError::Trailing(1)));
        // A raw tile whose length does not match its size.
        let bad = frame(&[(0, 0, 2, 2, Codec::Raw, vec![0; 11])], MAX_MESSAGE).remove(0);
        assert_eq!(parse(&bad), Err(FrameError::RawLength(0, 11, 12)));
        // A length that claims more than the message holds.
        let mut m = good.clone();
        m[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(&m), Err(FrameError::Truncated));
        assert_eq!(
            parse(&vec![1u8; MAX_MESSAGE + 1]),
            Err(FrameError::TooLarge(MAX_MESSAGE + 1))
        );
    }

    #[test]
    fn input_events_are_checked_against_the_screen() {
        let p = |v: serde_json::Value| Input::parse(v, 100, 50);
        assert_eq!(
            p(serde_json::json!({"type":"input","e":"move","x":99,"y":49})),
            Ok(Input::Move { x: 99, y: 49 })
        );
        assert!(
            p(serde_json::json!({"e":"move","x":100,"y":0}))
                .unwrap_err()
                .contains("outside")
        );
        assert!(
            p(serde_json::json!({"e":"button","button":9,"down":true,"x":1,"y":1}))
                .unwrap_err()
                .contains("button 9")
        );
        assert!(
            p(serde_json::json!({"e":"key","key":"NoSuchKey","down":true}))
                .unwrap_err()
                .contains("unknown key")
        );
        assert!(p(serde_json::json!({"e":"key","key":"Enter","down":true})).is_ok());
        assert!(p(serde_json::json!({"e":"warp"})).is_err());
        assert!(p(serde_json::json!({"e":"move","x":1,"y":1,"z":2})).is_err());
    }

    #[test]
    fn annotations_are_checked_against_the_screen() {
        let p = |v: serde_json::Value| Annotation::parse(v, 100, 50);
        assert!(p(serde_json::json!({"type":"annotate","op":"stroke","points":[[1,1],[99,49]],"color":"#e00000"})).is_ok());
        assert_eq!(p(serde_json::json!({"op":"clear"})), Ok(Annotation::Clear));
        assert!(
            p(serde_json::json!({"op":"stroke","points":[[100,1]],"color":"#e00000"}))
                .unwrap_err()
                .contains("outside")
        );
        assert!(
            p(serde_json::json!({"op":"stroke","points":[],"color":"#e00000"}))
                .unwrap_err()
                .contains("1 to")
        );
        assert!(
            p(serde_json::json!({"op":"stroke","points":[[1,1]],"color":"pink"}))
                .unwrap_err()
                .contains("colour")
        );
        let many: Vec<[u16; 2]> = (0..=MAX_STROKE as u16).map(|i| [i % 100, 1]).collect();
        assert!(p(serde_json::json!({"op":"stroke","points":many,"color":"#e00000"})).is_err());
    }

    #[test]
    fn consent_lists_parse() {
        let c = Consent::parse_list("view, control").unwrap();
        assert!(c.view && c.control && !c.files);
        assert_eq!(c.list(), "view, control");
        assert!(
            Consent::parse_list("view,root")
                .unwrap_err()
                .contains("root")
        );
        assert_eq!(Consent::default().list(), "nothing");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn mutated_messages_never_panic(pos in 0usize..40, val in proptest::num::u8::ANY) {
            let mut m = frame(&[(0, 0, 2, 2, Codec::Raw, vec![0; 12]), (2, 2, 3, 3, Codec::Deflate, vec![5; 9])], MAX_MESSAGE).remove(0);
            let i = pos % m.len();
            m[i] = val;
            if let Ok(Message::Update(u)) = parse(&m) {
                for t in u.tiles {
                    proptest::prop_assert!(u32::from(t.x) + u32::from(t.w) <= u32::from(u.width));
                    proptest::prop_assert!(u32::from(t.y) + u32::from(t.h) <= u32::from(u.height));
                }
            }
        }
    }
}
