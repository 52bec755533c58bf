//! The appliance image's own commands (docs/install.md, docs/updates.md): first-boot setup on the
//! console, the supervisor that keeps the server running and tries updates, signed updates, and
//! the SNTP time client. The image's boot scripts (image/rootfs) call these.

pub mod setup;
pub mod supervise;
pub mod timesync;
pub mod update;

/// `SYSTEM/appliance.conf`, written by setup; its presence means setup is done.
pub const APPLIANCE_CONF: &str = "appliance.conf";
