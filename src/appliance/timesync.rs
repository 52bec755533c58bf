//! `custos timesync`: an SNTP client (RFC 4330) for the appliance's clock, which stamps every
//! audit entry and decides when retention runs out. Each server is asked once; the answer with
//! the shortest round trip wins. Answers are checked (server mode, a stratum of 1 to 15, no
//! alarm, our own transmit time echoed back) so a stray or spoofed packet is not believed.

use std::net::{ToSocketAddrs, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from 1900 (NTP's era 0) to 1970.
const NTP_TO_UNIX: f64 = 2_208_988_800.0;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub server: String,
    /// Seconds to add to the local clock.
    pub offset: f64,
    /// Round-trip time, seconds.
    pub delay: f64,
    pub stratum: u8,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn to_ntp(t: f64) -> [u8; 8] {
    let t = t + NTP_TO_UNIX;
    let secs = t.floor();
    let frac = ((t - secs) * 4_294_967_296.0) as u32;
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&(secs as u64 as u32).to_be_bytes());
    b[4..].copy_from_slice(&frac.to_be_bytes());
    b
}

fn from_ntp(b: &[u8]) -> f64 {
    let secs = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as f64;
    let frac = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as f64 / 4_294_967_296.0;
    secs + frac - NTP_TO_UNIX
}

/// Checks a server's reply to a request sent at `t1` (whose transmit field was `sent`) and
/// received at `t4`.
pub fn evaluate(
    server: &str,
    reply: &[u8],
    sent: &[u8; 8],
    t1: f64,
    t4: f64,
) -> Result<Sample, String> {
    if reply.len() < 48 {
        return Err(format!(
            "{server}: a reply of {} bytes is too short",
            reply.len()
        ));
    }
    let (li, mode, stratum) = (reply[0] >> 6, reply[0] & 7, reply[1]);
    if mode != 4 {
        return Err(format!(
            "{server}: the reply is not from a server (mode {mode})"
        ));
    }
    if li == 3 || stratum == 0 || stratum > 15 {
        return Err(format!(
            "{server}: the server is not synchronized (stratum {stratum})"
        ));
    }
    if reply[24..32] != sent[..] {
        return Err(format!("{server}: the reply does not answer our request"));
    }
    let (t2, t3) = (from_ntp(&reply[32..40]), from_ntp(&reply[40..48]));
    if reply[40..48].iter().all(|b| *b == 0) {
        return Err(format!("{server}: the reply carries no time"));
    }
    Ok(Sample {
        server: server.to_string(),
        offset: ((t2 - t1) + (t3 - t4)) / 2.0,
        delay: (t4 - t1) - (t3 - t2),
        stratum,
    })
}

/// Asks one server (`host` or `host:port`; port 123 by default).
pub fn query(server: &str, timeout: Duration) -> Result<Sample, String> {
    let target = if server.contains(':') && !server.contains("::") || server.starts_with('[') {
        server.to_string()
    } else {
        format!("{server}:123")
    };
    let addr = target
        .to_socket_addrs()
        .map_err(|e| format!("{server}: {e}"))?
        .next()
        .ok_or_else(|| format!("{server}: no address"))?;
    let bind = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(bind).map_err(|e| format!("{server}: {e}"))?;
    sock.connect(addr).map_err(|e| format!("{server}: {e}"))?;
    sock.set_read_timeout(Some(timeout))
        .map_err(|e| format!("{server}: {e}"))?;
    let mut req = [0u8; 48];
    req[0] = 0x23; // no leap warning, version 4, client
    let t1 = now();
    let mut sent = to_ntp(t1);
    // The low bits of the fraction are random, so a blind attacker cannot guess the echo.
    sent[6..].copy_from_slice(&crate::crypto::random_array::<2>());
    req[40..48].copy_from_slice(&sent);
    sock.send(&req).map_err(|e| format!("{server}: {e}"))?;
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .map_err(|e| format!("{server}: no answer ({e})"))?;
    let t4 = now();
    evaluate(server, &buf[..n], &sent, from_ntp(&sent), t4)
}

/// Asks every server; the best answer (shortest round trip) and the failures.
pub fn best(servers: &[String], timeout: Duration) -> (Option<Sample>, Vec<String>) {
    let mut errors = Vec::new();
    let mut best: Option<Sample> = None;
    for s in servers {
        match query(s, timeout) {
            Ok(sample) => {
                if best.as_ref().is_none_or(|b| sample.delay < b.delay) {
                    best = Some(sample);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    (best, errors)
}

/// Steps the system clock by `offset` seconds (needs CAP_SYS_TIME).
pub fn step(offset: f64) -> std::io::Result<()> {
    let t = now() + offset;
    let secs = t.floor();
    rustix::time::clock_settime(
        rustix::time::ClockId::Realtime,
        rustix::time::Timespec {
            tv_sec: secs as i64,
            tv_nsec: ((t - secs) * 1e9) as _,
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(sent: &[u8; 8], t2: f64, t3: f64) -> [u8; 48] {
        let mut r = [0u8; 48];
        r[0] = 0x24; // version 4, server
        r[1] = 2;
        r[24..32].copy_from_slice(sent);
        r[32..40].copy_from_slice(&to_ntp(t2));
        r[40..48].copy_from_slice(&to_ntp(t3));
        r
    }

    #[test]
    fn offset_and_delay_follow_rfc_4330() {
        let t1 = 1_800_000_000.0;
        let sent = to_ntp(t1);
        // The server is 10 s ahead; 20 ms each way, 5 ms inside the server.
        let r = reply(&sent, t1 + 10.020, t1 + 10.025);
        let s = evaluate("s", &r, &sent, from_ntp(&sent), t1 + 0.045).unwrap();
        assert!((s.offset - 10.0).abs() < 1e-3, "{s:?}");
        assert!((s.delay - 0.040).abs() < 1e-3, "{s:?}");
    }

    #[test]
    fn replies_that_are_not_answers_are_refused() {
        let t1 = 1_800_000_000.0;
        let sent = to_ntp(t1);
        let good = reply(&sent, t1, t1);
        let mut r = good;
        r[0] = 0x23; // a client's packet
        assert!(
            evaluate("s", &r, &sent, t1, t1)
                .unwrap_err()
                .contains("mode 3")
        );
        let mut r = good;
        r[1] = 0; // kiss-o'-death / unsynchronized
        assert!(
            evaluate("s", &r, &sent, t1, t1)
                .unwrap_err()
                .contains("not synchronized")
        );
        let mut r = good;
        r[0] |= 0xC0; // alarm
        assert!(evaluate("s", &r, &sent, t1, t1).is_err());
        let mut r = good;
        r[25] ^= 1; // not our request
        assert!(
            evaluate("s", &r, &sent, t1, t1)
                .unwrap_err()
                .contains("does not answer")
        );
        assert!(
            evaluate("s", &good[..40], &sent, t1, t1)
                .unwrap_err()
                .contains("too short")
        );
    }
}
