//! What the client needs from the desktop it shares, behind a trait so that Windows, macOS and
//! Wayland backends can follow the X11 one.

use super::{Annotation, Input};

/// One captured screen: 32 bits per pixel, blue, green, red, unused (the X11 ZPixmap layout on
/// little-endian machines), `stride` bytes per row.
pub struct Frame<'a> {
    pub width: u16,
    pub height: u16,
    pub stride: usize,
    pub pixels: &'a [u8],
}

pub trait Platform: Send {
    /// Captures the whole screen.
    fn capture(&mut self) -> anyhow::Result<Frame<'_>>;
    /// Where the pointer is.
    fn pointer(&mut self) -> anyhow::Result<(u16, u16)>;
    /// Injects one of the agent's events as if the user made it.
    fn inject(&mut self, input: &Input) -> anyhow::Result<()>;
    /// Shows (or clears) the agent's annotations over the screen, without taking the user's
    /// input.
    fn annotate(&mut self, a: &Annotation) -> anyhow::Result<()>;
    /// Shows on the screen whether the agent is viewing or controlling it.
    fn indicate(&mut self, state: Indicator) -> anyhow::Result<()>;
}

/// What the on-screen indicator says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Indicator {
    Off,
    Viewing,
    Controlling,
}
