//! Operational metrics for Prometheus: counters kept in memory by the parts that count, and the
//! text exposition format (version 0.0.4) that `/metrics` answers with.
//!
//! Metrics name no customer, agent or session: labels are only portal and skill names from the
//! configuration, status words and status classes, so a scrape reveals load, never content.

use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// How a login attempt ended.
#[derive(Clone, Copy, Debug)]
pub enum LoginResult {
    Ok,
    Denied,
    Throttled,
}

/// What became of one message a relay connection received.
#[derive(Clone, Copy, Debug)]
pub enum RelayResult {
    Handled,
    Refused,
    RateLimited,
}

/// Counters since the process started. Every field only ever grows, except the gauge of open
/// relay connections.
pub struct Metrics {
    started: Instant,
    /// Responses by status class: 1xx to 5xx.
    responses: [AtomicU64; 5],
    logins: [AtomicU64; 3],
    relay_messages: [AtomicU64; 3],
    relay_bytes: AtomicU64,
    relay_open: AtomicU64,
    /// Outbox delivery attempts: [webhook ok, webhook failed, email ok, email failed].
    deliveries: [AtomicU64; 4],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            responses: Default::default(),
            logins: Default::default(),
            relay_messages: Default::default(),
            relay_bytes: AtomicU64::new(0),
            relay_open: AtomicU64::new(0),
            deliveries: Default::default(),
        }
    }

    pub fn response(&self, status: u16) {
        if let Some(c) = (status / 100)
            .checked_sub(1)
            .and_then(|i| self.responses.get(usize::from(i)))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn login(&self, r: LoginResult) {
        self.logins[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn relay_message(&self, bytes: usize, r: RelayResult) {
        self.relay_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.relay_messages[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one outbox delivery attempt on a channel kind ("webhook" or "email").
    pub fn delivery(&self, kind: &str, ok: bool) {
        let i = usize::from(kind == "email") * 2 + usize::from(!ok);
        self.deliveries[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a relay connection as open until the guard drops.
    pub fn relay_connection(&self) -> RelayGuard<'_> {
        self.relay_open.fetch_add(1, Ordering::Relaxed);
        RelayGuard(self)
    }

    /// Writes this process's counters.
    pub fn write(&self, out: &mut Exposition) {
        out.single(
            "custos_uptime_seconds",
            Kind::Gauge,
            "Seconds since this process started.",
            self.started.elapsed().as_secs(),
        );
        out.family(
            "custos_http_responses_total",
            Kind::Counter,
            "HTTP responses sent, by status class.",
        );
        for (i, c) in self.responses.iter().enumerate() {
            let class = format!("{}xx", i + 1);
            out.sample(
                "custos_http_responses_total",
                &[("class", &class)],
                c.load(Ordering::Relaxed),
            );
        }
        out.family(
            "custos_logins_total",
            Kind::Counter,
            "Password logins, by result.",
        );
        for (name, r) in [
            ("ok", LoginResult::Ok),
            ("denied", LoginResult::Denied),
            ("throttled", LoginResult::Throttled),
        ] {
            out.sample(
                "custos_logins_total",
                &[("result", name)],
                self.logins[r as usize].load(Ordering::Relaxed),
            );
        }
        out.single(
            "custos_relay_connections",
            Kind::Gauge,
            "Session relay WebSocket connections open now.",
            self.relay_open.load(Ordering::Relaxed),
        );
        out.family(
            "custos_relay_messages_total",
            Kind::Counter,
            "Messages received on session relay connections, by what became of them.",
        );
        for (name, r) in [
            ("handled", RelayResult::Handled),
            ("refused", RelayResult::Refused),
            ("rate_limited", RelayResult::RateLimited),
        ] {
            out.sample(
                "custos_relay_messages_total",
                &[("result", name)],
                self.relay_messages[r as usize].load(Ordering::Relaxed),
            );
        }
        out.single(
            "custos_relay_received_bytes_total",
            Kind::Counter,
            "Bytes of messages received on session relay connections.",
            self.relay_bytes.load(Ordering::Relaxed),
        );
        out.family(
            "custos_delivery_attempts_total",
            Kind::Counter,
            "Webhook and e-mail delivery attempts, by channel kind and result.",
        );
        for (i, (kind, result)) in [
            ("webhook", "ok"),
            ("webhook", "failed"),
            ("email", "ok"),
            ("email", "failed"),
        ]
        .into_iter()
        .enumerate()
        {
            out.sample(
                "custos_delivery_attempts_total",
                &[("kind", kind), ("result", result)],
                self.deliveries[i].load(Ordering::Relaxed),
            );
        }
    }
}

/// Keeps one relay connection counted as open.
pub struct RelayGuard<'a>(&'a Metrics);

impl Drop for RelayGuard<'_> {
    fn drop(&mut self) {
        self.0.relay_open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Counter,
    Gauge,
}

/// A metrics page in the Prometheus text format, written one family at a time.
#[derive(Default)]
pub struct Exposition(String);

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Exposition {
    /// Starts a family: its HELP and TYPE lines. Its samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    pub fn finish(self) -> String {
        self.0
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::default();
        e.family("x_total", Kind::Counter, "A help\nline with \\.");
        e.sample("x_total", &[("a", "q\"b\\c\nd"), ("b", "plain")], 3);
        assert_eq!(
            e.finish(),
            "# HELP x_total A help\\nline with \\\\.\n# TYPE x_total counter\nx_total{a=\"q\\\"b\\\\c\\nd\",b=\"plain\"} 3\n"
        );
    }

    #[test]
    fn counters_count_and_the_gauge_comes_back_down() {
        let m = Metrics::new();
        m.response(200);
        m.response(404);
        m.response(404);
        m.response(99); // not a status: ignored
        m.response(600);
        m.login(LoginResult::Denied);
        m.relay_message(10, RelayResult::Handled);
        m.relay_message(5, RelayResult::RateLimited);
        let g = m.relay_connection();
        let mut e = Exposition::default();
        m.write(&mut e);
        let text = e.finish();
        for line in [
            "custos_http_responses_total{class=\"2xx\"} 1",
            "custos_http_responses_total{class=\"4xx\"} 2",
            "custos_http_responses_total{class=\"5xx\"} 0",
            "custos_logins_total{result=\"denied\"} 1",
            "custos_relay_messages_total{result=\"handled\"} 1",
            "custos_relay_messages_total{result=\"rate_limited\"} 1",
            "custos_relay_received_bytes_total 15",
            "custos_relay_connections 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        drop(g);
        let mut e = Exposition::default();
        m.write(&mut e);
        assert!(
            e.finish()
                .lines()
                .any(|l| l == "custos_relay_connections 0")
        );
    }
}
