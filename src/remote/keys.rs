//! Key names as browsers give them (`KeyboardEvent.key`) to X keysyms. Pure.

/// Named keys and their keysyms (X11 `keysymdef.h`).
const NAMED: &[(&str, u32)] = &[
    ("Backspace", 0xff08),
    ("Tab", 0xff09),
    ("Enter", 0xff0d),
    ("Pause", 0xff13),
    ("ScrollLock", 0xff14),
    ("Escape", 0xff1b),
    ("Home", 0xff50),
    ("ArrowLeft", 0xff51),
    ("ArrowUp", 0xff52),
    ("ArrowRight", 0xff53),
    ("ArrowDown", 0xff54),
    ("PageUp", 0xff55),
    ("PageDown", 0xff56),
    ("End", 0xff57),
    ("PrintScreen", 0xff61),
    ("Insert", 0xff63),
    ("ContextMenu", 0xff67),
    ("NumLock", 0xff7f),
    ("F1", 0xffbe),
    ("F2", 0xffbf),
    ("F3", 0xffc0),
    ("F4", 0xffc1),
    ("F5", 0xffc2),
    ("F6", 0xffc3),
    ("F7", 0xffc4),
    ("F8", 0xffc5),
    ("F9", 0xffc6),
    ("F10", 0xffc7),
    ("F11", 0xffc8),
    ("F12", 0xffc9),
    ("Shift", 0xffe1),
    ("Control", 0xffe3),
    ("CapsLock", 0xffe5),
    ("Meta", 0xffeb),
    ("Alt", 0xffe9),
    ("AltGraph", 0xfe03),
    ("Delete", 0xffff),
];

/// The keysym of a key name, or `None` for a name this module does not know. A single
/// character maps to its Unicode keysym (Latin-1 directly, the rest at 0x0100_0000 + code
/// point, as X11 defines).
pub fn keysym(name: &str) -> Option<u32> {
    if name.len() > 32 {
        return None;
    }
    let mut chars = name.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        let cp = u32::from(c);
        return match cp {
            0x20..=0x7e | 0xa0..=0xff => Some(cp),
            _ if c.is_control() => None,
            _ => Some(0x0100_0000 + cp),
        };
    }
    NAMED.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
}

#[cfg(test)]
mod tests {
    use super::keysym;

    #[test]
    fn names_and_characters() {
        assert_eq!(keysym("a"), Some(0x61));
        assert_eq!(keysym("A"), Some(0x41));
        assert_eq!(keysym(" "), Some(0x20));
        assert_eq!(keysym("é"), Some(0xe9));
        assert_eq!(keysym("€"), Some(0x0100_20ac));
        assert_eq!(keysym("Enter"), Some(0xff0d));
        assert_eq!(keysym("Delete"), Some(0xffff));
        assert_eq!(keysym("\n"), None);
        assert_eq!(keysym("Hyper"), None);
        assert_eq!(keysym(""), None);
    }
}
