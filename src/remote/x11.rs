//! The X11 backend: captures the root window through MIT-SHM (a memfd shared with the X server,
//! read back with `pread`, so no memory mapping and no `unsafe`), falling back to `GetImage`
//! when the server has no MIT-SHM; injects the agent's pointer and keys through XTEST.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{Context, bail};
use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::shape::{self, ConnectionExt as _};
use x11rb::protocol::shm::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{self, ConnectionExt as _, ImageFormat};
use x11rb::protocol::xtest::{self, ConnectionExt as _};
use x11rb::rust_connection::RustConnection;

use super::platform::{Frame, Indicator, Platform};
use super::{Annotation, Input, keys};

/// The indicator strip's size, in pixels.
const BADGE_W: u16 = 460;
const BADGE_H: u16 = 20;

/// Half the width of an annotation's line, in pixels.
const INK_HALF: i16 = 2;
/// The most rectangles one colour's overlay is shaped from.
const MAX_INK_RECTS: usize = 50_000;

/// One colour's overlay: an override-redirect window shaped to the strokes, which takes no input.
struct Ink {
    window: xproto::Window,
    rects: Vec<xproto::Rectangle>,
}

struct Shm {
    seg: shm::Seg,
    file: File,
}

pub struct X11 {
    conn: RustConnection,
    root: xproto::Window,
    width: u16,
    height: u16,
    shm: Option<Shm>,
    buf: Vec<u8>,
    min_keycode: u8,
    per_keycode: usize,
    keysyms: Vec<u32>,
    shift: u8,
    /// Red, green and blue masks of the root visual, for annotation colours.
    masks: (u32, u32, u32),
    ink: Vec<(String, Ink)>,
    has_shape: bool,
    /// The indicator window and the font its text is drawn in, once created.
    badge: Option<(xproto::Window, xproto::Font)>,
}

impl X11 {
    /// Connects to `display` (or `$DISPLAY`) and checks that it can capture and inject.
    pub fn open(display: Option<&str>) -> anyhow::Result<X11> {
        let (conn, n) = x11rb::connect(display).context("cannot connect to the X display")?;
        let setup = conn.setup();
        let screen = &setup.roots[n];
        let (root, width, height, depth) = (
            screen.root,
            screen.width_in_pixels,
            screen.height_in_pixels,
            screen.root_depth,
        );
        let masks = screen
            .allowed_depths
            .iter()
            .flat_map(|d| &d.visuals)
            .find(|v| v.visual_id == screen.root_visual)
            .map_or((0xff0000, 0xff00, 0xff), |v| {
                (v.red_mask, v.green_mask, v.blue_mask)
            });
        let bpp = setup
            .pixmap_formats
            .iter()
            .find(|f| f.depth == depth)
            .map(|f| f.bits_per_pixel);
        if !matches!(depth, 24 | 32) || bpp != Some(32) {
            bail!(
                "the X screen has depth {depth} at {bpp:?} bits per pixel; only 24/32-bit true colour is supported"
            );
        }
        if setup.image_byte_order != xproto::ImageOrder::LSB_FIRST {
            bail!("the X server sends images most significant byte first, which is not supported");
        }
        let (min_keycode, max_keycode) = (setup.min_keycode, setup.max_keycode);
        if conn
            .extension_information(xtest::X11_EXTENSION_NAME)?
            .is_none()
        {
            bail!("the X server has no XTEST extension, so the agent's input cannot be injected");
        }
        let map = conn
            .get_keyboard_mapping(min_keycode, max_keycode - min_keycode + 1)?
            .reply()
            .context("reading the keyboard mapping")?;
        let mut x = X11 {
            conn,
            root,
            width,
            height,
            shm: None,
            buf: Vec::new(),
            min_keycode,
            per_keycode: usize::from(map.keysyms_per_keycode).max(1),
            keysyms: map.keysyms,
            shift: 0,
            masks,
            ink: Vec::new(),
            has_shape: false,
            badge: None,
        };
        x.has_shape = x
            .conn
            .extension_information(shape::X11_EXTENSION_NAME)?
            .is_some();
        x.shift = x
            .keycode(0xffe1)
            .map(|(k, _)| k)
            .context("the keyboard map has no Shift key")?;
        x.shm = x.attach_shm().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "MIT-SHM is not usable; capturing with GetImage (slower)");
            None
        });
        Ok(x)
    }

    pub fn uses_shm(&self) -> bool {
        self.shm.is_some()
    }

    fn attach_shm(&self) -> anyhow::Result<Option<Shm>> {
        if self
            .conn
            .extension_information(shm::X11_EXTENSION_NAME)?
            .is_none()
        {
            return Ok(None);
        }
        let size = usize::from(self.width) * usize::from(self.height) * 4;
        let fd = rustix::fs::memfd_create("custos-screen", rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, size as u64)?;
        let seg = self.conn.generate_id()?;
        self.conn
            .shm_attach_fd(seg, fd.try_clone()?, false)?
            .check()
            .context("MIT-SHM attach")?;
        Ok(Some(Shm {
            seg,
            file: File::from(fd),
        }))
    }

    /// The keycode that produces `sym`, and whether Shift is needed for it.
    fn keycode(&self, sym: u32) -> Option<(u8, bool)> {
        let per = self.per_keycode;
        let find = |col: usize| {
            self.keysyms
                .chunks(per)
                .position(|c| c.get(col) == Some(&sym))
        };
        let (i, shifted) = match find(0) {
            Some(i) => (i, false),
            None => (find(1)?, true),
        };
        Some((
            self.min_keycode.checked_add(u8::try_from(i).ok()?)?,
            shifted,
        ))
    }

    /// The pixel value of `#rrggbb` in the root visual.
    fn pixel(&self, color: &str) -> u32 {
        let v = u32::from_str_radix(color.trim_start_matches('#'), 16).unwrap_or(0xe00000);
        let scale = |c: u32, mask: u32| {
            if mask == 0 {
                return 0;
            }
            let bits = mask.count_ones();
            let shift = mask.trailing_zeros();
            ((c >> (8 - bits.min(8))) << shift) & mask
        };
        scale((v >> 16) & 0xff, self.masks.0)
            | scale((v >> 8) & 0xff, self.masks.1)
            | scale(v & 0xff, self.masks.2)
    }

    fn ink_window(&mut self, color: &str) -> anyhow::Result<usize> {
        if let Some(i) = self.ink.iter().position(|(c, _)| c == color) {
            return Ok(i);
        }
        let window = self.conn.generate_id()?;
        let aux = xproto::CreateWindowAux::new()
            .background_pixel(self.pixel(color))
            .override_redirect(1);
        self.conn.create_window(
            x11rb::COPY_DEPTH_FROM_PARENT,
            window,
            self.root,
            0,
            0,
            self.width,
            self.height,
            0,
            xproto::WindowClass::INPUT_OUTPUT,
            x11rb::COPY_FROM_PARENT,
            &aux,
        )?;
        // No input region: clicks and keys go to the windows below.
        self.conn.shape_rectangles(
            shape::SO::SET,
            shape::SK::INPUT,
            xproto::ClipOrdering::UNSORTED,
            window,
            0,
            0,
            &[],
        )?;
        self.ink.push((
            color.to_string(),
            Ink {
                window,
                rects: Vec::new(),
            },
        ));
        Ok(self.ink.len() - 1)
    }

    /// The indicator: a strip at the top centre of the screen that takes no input.
    fn badge(&mut self) -> anyhow::Result<(xproto::Window, xproto::Font)> {
        if let Some(b) = self.badge {
            return Ok(b);
        }
        let (w, h) = (BADGE_W.min(self.width), BADGE_H);
        let window = self.conn.generate_id()?;
        self.conn.create_window(
            x11rb::COPY_DEPTH_FROM_PARENT,
            window,
            self.root,
            ((self.width - w) / 2) as i16,
            0,
            w,
            h,
            0,
            xproto::WindowClass::INPUT_OUTPUT,
            x11rb::COPY_FROM_PARENT,
            &xproto::CreateWindowAux::new().override_redirect(1),
        )?;
        if self.has_shape {
            self.conn.shape_rectangles(
                shape::SO::SET,
                shape::SK::INPUT,
                xproto::ClipOrdering::UNSORTED,
                window,
                0,
                0,
                &[],
            )?;
        }
        let font = self.conn.generate_id()?;
        self.conn.open_font(font, b"fixed")?.check()?;
        self.badge = Some((window, font));
        Ok((window, font))
    }

    fn fake(&self, kind: u8, detail: u8, x: i16, y: i16) -> anyhow::Result<()> {
        self.conn
            .xtest_fake_input(kind, detail, x11rb::CURRENT_TIME, self.root, x, y, 0)?;
        Ok(())
    }
}

impl Platform for X11 {
    fn capture(&mut self) -> anyhow::Result<Frame<'_>> {
        let (w, h) = (self.width, self.height);
        let size = usize::from(w) * usize::from(h) * 4;
        match &self.shm {
            Some(s) => {
                self.conn
                    .shm_get_image(
                        self.root,
                        0,
                        0,
                        w,
                        h,
                        !0,
                        ImageFormat::Z_PIXMAP.into(),
                        s.seg,
                        0,
                    )?
                    .reply()
                    .context("MIT-SHM GetImage")?;
                self.buf.resize(size, 0);
                s.file.read_exact_at(&mut self.buf, 0)?;
            }
            None => {
                let img = self
                    .conn
                    .get_image(ImageFormat::Z_PIXMAP, self.root, 0, 0, w, h, !0)?
                    .reply()
                    .context("GetImage")?;
                self.buf = img.data;
                if self.buf.len() < size {
                    bail!(
                        "GetImage returned {} bytes for a {w}x{h} screen",
                        self.buf.len()
                    );
                }
            }
        }
        Ok(Frame {
            width: w,
            height: h,
            stride: usize::from(w) * 4,
            pixels: &self.buf[..size],
        })
    }

    fn pointer(&mut self) -> anyhow::Result<(u16, u16)> {
        let p = self.conn.query_pointer(self.root)?.reply()?;
        Ok((
            p.root_x.clamp(0, self.width as i16 - 1) as u16,
            p.root_y.clamp(0, self.height as i16 - 1) as u16,
        ))
    }

    fn inject(&mut self, input: &Input) -> anyhow::Result<()> {
        // Positions were checked against the screen by the relay; they fit in i16 because the
        // screen's sides (at most 8192) do.
        match input {
            Input::Move { x, y } => {
                self.fake(xproto::MOTION_NOTIFY_EVENT, 0, *x as i16, *y as i16)?
            }
            Input::Button { button, down, x, y } => {
                self.fake(xproto::MOTION_NOTIFY_EVENT, 0, *x as i16, *y as i16)?;
                let kind = if *down {
                    xproto::BUTTON_PRESS_EVENT
                } else {
                    xproto::BUTTON_RELEASE_EVENT
                };
                self.fake(kind, *button, 0, 0)?;
            }
            Input::Key { key, down } => {
                let sym = keys::keysym(key).with_context(|| format!("unknown key {key:?}"))?;
                let (code, shifted) = self
                    .keycode(sym)
                    .with_context(|| format!("no key on this keyboard produces {key:?}"))?;
                let (press, release) = (xproto::KEY_PRESS_EVENT, xproto::KEY_RELEASE_EVENT);
                match (*down, shifted) {
                    (true, true) => {
                        self.fake(press, self.shift, 0, 0)?;
                        self.fake(press, code, 0, 0)?;
                    }
                    (false, true) => {
                        self.fake(release, code, 0, 0)?;
                        self.fake(release, self.shift, 0, 0)?;
                    }
                    (true, false) => self.fake(press, code, 0, 0)?,
                    (false, false) => self.fake(release, code, 0, 0)?,
                }
            }
        }
        self.conn.flush()?;
        Ok(())
    }

    fn indicate(&mut self, state: Indicator) -> anyhow::Result<()> {
        let (window, font) = self.badge()?;
        let (text, color): (&[u8], &str) = match state {
            Indicator::Off => {
                self.conn.unmap_window(window)?;
                self.conn.flush()?;
                return Ok(());
            }
            Indicator::Viewing => (
                b"Custos: the support agent is viewing this screen",
                "#8a5a00",
            ),
            Indicator::Controlling => (
                b"Custos: the support agent is CONTROLLING this screen",
                "#b3261e",
            ),
        };
        let bg = self.pixel(color);
        self.conn.change_window_attributes(
            window,
            &xproto::ChangeWindowAttributesAux::new().background_pixel(bg),
        )?;
        self.conn.map_window(window)?;
        self.conn.configure_window(
            window,
            &xproto::ConfigureWindowAux::new().stack_mode(xproto::StackMode::ABOVE),
        )?;
        self.conn.clear_area(false, window, 0, 0, 0, 0)?;
        let gc = self.conn.generate_id()?;
        self.conn.create_gc(
            gc,
            window,
            &xproto::CreateGCAux::new()
                .foreground(self.pixel("#ffffff"))
                .background(bg)
                .font(font),
        )?;
        self.conn.image_text8(window, gc, 8, 15, text)?;
        self.conn.free_gc(gc)?;
        self.conn.flush()?;
        Ok(())
    }

    fn annotate(&mut self, a: &Annotation) -> anyhow::Result<()> {
        if !self.has_shape {
            bail!("the X server has no SHAPE extension, so annotations cannot be shown");
        }
        match a {
            Annotation::Clear => {
                for (_, ink) in self.ink.drain(..) {
                    self.conn.destroy_window(ink.window)?;
                }
            }
            Annotation::Stroke { points, color } => {
                let i = self.ink_window(color)?;
                let mut add = Vec::new();
                // The first segment runs from the first point to itself: a one-point stroke is
                // a dot.
                let mut prev = points.first().copied().unwrap_or([0, 0]);
                for &p in points {
                    let (x0, y0) = (i32::from(prev[0]), i32::from(prev[1]));
                    let (x1, y1) = (i32::from(p[0]), i32::from(p[1]));
                    let steps = ((x1 - x0).abs().max((y1 - y0).abs()) / 2).max(1);
                    for s in 0..=steps {
                        // Points lie on the screen (checked by the relay), so these fit in i16.
                        let x = (x0 + (x1 - x0) * s / steps) as i16;
                        let y = (y0 + (y1 - y0) * s / steps) as i16;
                        add.push(xproto::Rectangle {
                            x: x - INK_HALF,
                            y: y - INK_HALF,
                            width: (2 * INK_HALF) as u16,
                            height: (2 * INK_HALF) as u16,
                        });
                    }
                    prev = p;
                }
                let ink = &mut self.ink[i].1;
                let room = MAX_INK_RECTS.saturating_sub(ink.rects.len());
                add.truncate(room);
                ink.rects.extend(add);
                self.conn.shape_rectangles(
                    shape::SO::SET,
                    shape::SK::BOUNDING,
                    xproto::ClipOrdering::UNSORTED,
                    ink.window,
                    0,
                    0,
                    &ink.rects,
                )?;
                self.conn.map_window(ink.window)?;
                self.conn.configure_window(
                    ink.window,
                    &xproto::ConfigureWindowAux::new().stack_mode(xproto::StackMode::ABOVE),
                )?;
            }
        }
        self.conn.flush()?;
        Ok(())
    }
}
