//! The integration sections of `custos.toml`: `[delivery]`, `[alerts]`, `[smtp]`, `[[syslog]]`
//! and `[knowledge]`, validated into plain values (config.rs reports errors with file and line).

use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::config::ConfigError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    initial_backoff_ms: Option<Spanned<i64>>,
    max_backoff_s: Option<Spanned<i64>>,
    give_up_after_h: Option<Spanned<i64>>,
    timeout_s: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    survey_rating_at_or_below: Option<Spanned<i64>>,
    queue_length_above: Option<Spanned<i64>>,
    queue_wait_above_s: Option<Spanned<i64>>,
    #[serde(default)]
    agents_on_duty: Vec<String>,
    agent_offline_after_s: Option<Spanned<i64>>,
    business_hours: Option<Spanned<String>>,
    utc_offset: Option<Spanned<String>>,
    #[serde(default)]
    email_to: Vec<Spanned<String>>,
    repeat_after_s: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    server: Spanned<String>,
    from: Spanned<String>,
    #[serde(default)]
    starttls: bool,
    username: Option<String>,
    password_file: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSyslog {
    name: Spanned<String>,
    address: Spanned<String>,
    transport: Spanned<String>,
    ca_file: Option<Spanned<String>>,
    server_name: Option<String>,
    forward: Spanned<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKnowledge {
    articles: Option<Spanned<String>>,
}

/// How the outbox retries.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub give_up_after_ms: i64,
    pub timeout_ms: u64,
}

/// Days of the week (bit 0 = Monday) and a daily window in minutes, at a fixed UTC offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusinessHours {
    pub days: u8,
    pub from_min: u32,
    pub to_min: u32,
    pub offset_s: i32,
}

impl BusinessHours {
    pub fn contains(&self, unix: i64) -> bool {
        let local = unix + i64::from(self.offset_s);
        // 1970-01-01 was a Thursday (weekday 3 with Monday = 0).
        let day = (local.div_euclid(86_400) + 3).rem_euclid(7) as u8;
        let minute = (local.rem_euclid(86_400) / 60) as u32;
        self.days & (1 << day) != 0 && (self.from_min..self.to_min).contains(&minute)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Alerts {
    pub survey_at_or_below: Option<u8>,
    pub queue_length_above: Option<usize>,
    pub queue_wait_above_s: Option<u64>,
    pub agents_on_duty: Vec<String>,
    pub agent_offline_after_s: u64,
    pub business_hours: Option<BusinessHours>,
    pub email_to: Vec<String>,
    pub repeat_after_s: u64,
}

#[derive(Clone, Debug)]
pub struct Smtp {
    pub server: String,
    pub from: String,
    pub starttls: bool,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls,
}

#[derive(Clone, Debug)]
pub struct Syslog {
    pub name: String,
    pub address: String,
    pub transport: Transport,
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub audit: bool,
    pub checkpoints: bool,
    pub alerts: bool,
}

#[derive(Clone, Debug)]
pub struct Integrations {
    pub delivery: Delivery,
    pub alerts: Alerts,
    pub smtp: Option<Smtp>,
    pub syslog: Vec<Syslog>,
    pub knowledge_dir: Option<PathBuf>,
}

/// The raw sections, as config.rs deserialized them.
pub struct Raw<'a> {
    pub delivery: &'a RawDelivery,
    pub alerts: &'a RawAlerts,
    pub smtp: Option<&'a RawSmtp>,
    pub syslog: &'a [RawSyslog],
    pub knowledge: &'a RawKnowledge,
}

type Err<'e> = &'e dyn Fn(Range<usize>, String) -> ConfigError;

fn ranged(
    v: &Option<Spanned<i64>>,
    name: &str,
    lo: i64,
    hi: i64,
    err: Err<'_>,
) -> Result<Option<i64>, ConfigError> {
    match v {
        None => Ok(None),
        Some(s) if (lo..=hi).contains(s.get_ref()) => Ok(Some(*s.get_ref())),
        Some(s) => Err(err(
            s.span(),
            format!("{name} = {} is out of range ({lo} to {hi})", s.get_ref()),
        )),
    }
}

fn file(
    v: &Option<Spanned<String>>,
    name: &str,
    err: Err<'_>,
) -> Result<Option<PathBuf>, ConfigError> {
    match v {
        None => Ok(None),
        Some(s) if std::path::Path::new(s.get_ref()).is_file() => {
            Ok(Some(PathBuf::from(s.get_ref())))
        }
        Some(s) => Err(err(
            s.span(),
            format!("{name}: {:?} does not exist or is not a file", s.get_ref()),
        )),
    }
}

/// An address like `host:port`.
fn host_port(s: &Spanned<String>, name: &str, err: Err<'_>) -> Result<String, ConfigError> {
    let v = s.get_ref();
    let ok = v
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(v.clone())
    } else {
        Err(err(
            s.span(),
            format!("{name} {v:?} is not an address like host:port"),
        ))
    }
}

fn email(s: &str) -> bool {
    s.len() <= 254
        && s.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty()
                && d.contains('.')
                && !s.contains(|c: char| c.is_whitespace() || c == '<' || c == '>')
        })
}

/// Parses `Mon-Fri 08:00-18:00` (days: a range or a comma list of Mon..Sun).
pub fn parse_business_hours(s: &str, offset_s: i32) -> Result<BusinessHours, String> {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let bad = || format!("{s:?} is not like \"Mon-Fri 08:00-18:00\"");
    let (days, hours) = s.trim().split_once(' ').ok_or_else(bad)?;
    let day = |d: &str| {
        DAYS.iter()
            .position(|x| x.eq_ignore_ascii_case(d.trim()))
            .ok_or_else(bad)
    };
    let mut mask = 0u8;
    for part in days.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                if a > b {
                    return Err(bad());
                }
                (a..=b).for_each(|d| mask |= 1 << d);
            }
            None => mask |= 1 << day(part)?,
        }
    }
    let minute = |t: &str| -> Result<u32, String> {
        let (h, m) = t.trim().split_once(':').ok_or_else(bad)?;
        let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 24 || m > 59 || (h == 24 && m > 0) {
            return Err(bad());
        }
        Ok(h * 60 + m)
    };
    let (from, to) = hours.split_once('-').ok_or_else(bad)?;
    let (from_min, to_min) = (minute(from)?, minute(to)?);
    if from_min >= to_min {
        return Err(format!("{s:?}: the window must end after it starts"));
    }
    Ok(BusinessHours {
        days: mask,
        from_min,
        to_min,
        offset_s,
    })
}

/// Parses `+01:00`, `-05:30` or `Z`.
pub fn parse_offset(s: &str) -> Result<i32, String> {
    if s == "Z" || s == "UTC" {
        return Ok(0);
    }
    let bad = || format!("utc_offset {s:?} is not like +01:00");
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

pub fn validate(raw: Raw<'_>, err: Err<'_>) -> Result<Integrations, ConfigError> {
    let d = raw.delivery;
    let delivery = Delivery {
        initial_backoff_ms: ranged(
            &d.initial_backoff_ms,
            "delivery.initial_backoff_ms",
            100,
            3_600_000,
            err,
        )?
        .unwrap_or(10_000) as u64,
        max_backoff_ms: ranged(&d.max_backoff_s, "delivery.max_backoff_s", 1, 86_400, err)?
            .unwrap_or(3600) as u64
            * 1000,
        give_up_after_ms: ranged(
            &d.give_up_after_h,
            "delivery.give_up_after_h",
            1,
            24 * 30,
            err,
        )?
        .unwrap_or(72)
            * 3_600_000,
        timeout_ms: ranged(&d.timeout_s, "delivery.timeout_s", 1, 120, err)?.unwrap_or(10) as u64
            * 1000,
    };

    let a = raw.alerts;
    let offset_s = match &a.utc_offset {
        None => 0,
        Some(s) => parse_offset(s.get_ref()).map_err(|m| err(s.span(), m))?,
    };
    let business_hours = match &a.business_hours {
        None => None,
        Some(s) => Some(
            parse_business_hours(s.get_ref(), offset_s)
                .map_err(|m| err(s.span(), format!("alerts.business_hours: {m}")))?,
        ),
    };
    let mut email_to = Vec::new();
    for e in &a.email_to {
        if !email(e.get_ref()) {
            return Err(err(
                e.span(),
                format!(
                    "alerts.email_to: {:?} is not an e-mail address",
                    e.get_ref()
                ),
            ));
        }
        email_to.push(e.get_ref().clone());
    }
    let alerts = Alerts {
        survey_at_or_below: ranged(
            &a.survey_rating_at_or_below,
            "alerts.survey_rating_at_or_below",
            1,
            5,
            err,
        )?
        .map(|v| v as u8),
        queue_length_above: ranged(
            &a.queue_length_above,
            "alerts.queue_length_above",
            0,
            100_000,
            err,
        )?
        .map(|v| v as usize),
        queue_wait_above_s: ranged(
            &a.queue_wait_above_s,
            "alerts.queue_wait_above_s",
            1,
            86_400,
            err,
        )?
        .map(|v| v as u64),
        agents_on_duty: a.agents_on_duty.clone(),
        agent_offline_after_s: ranged(
            &a.agent_offline_after_s,
            "alerts.agent_offline_after_s",
            0,
            86_400,
            err,
        )?
        .unwrap_or(300) as u64,
        business_hours,
        email_to,
        repeat_after_s: ranged(
            &a.repeat_after_s,
            "alerts.repeat_after_s",
            1,
            7 * 86_400,
            err,
        )?
        .unwrap_or(1800) as u64,
    };

    let smtp = match raw.smtp {
        None => None,
        Some(s) => {
            if !email(s.from.get_ref()) {
                return Err(err(
                    s.from.span(),
                    format!("smtp.from: {:?} is not an e-mail address", s.from.get_ref()),
                ));
            }
            if s.username.is_some() != s.password_file.is_some() {
                return Err(err(
                    s.server.span(),
                    "smtp.username and smtp.password_file must be given together".into(),
                ));
            }
            Some(Smtp {
                server: host_port(&s.server, "smtp.server", err)?,
                from: s.from.get_ref().clone(),
                starttls: s.starttls,
                username: s.username.clone(),
                password_file: file(&s.password_file, "smtp.password_file", err)?,
                ca_file: file(&s.ca_file, "smtp.ca_file", err)?,
            })
        }
    };
    if !alerts.email_to.is_empty() && smtp.is_none() {
        let span = a.email_to[0].span();
        return Err(err(
            span,
            "alerts.email_to needs an [smtp] section to send through".into(),
        ));
    }

    let mut syslog: Vec<Syslog> = Vec::new();
    for s in raw.syslog {
        let name = s.name.get_ref();
        if name.is_empty()
            || name.len() > 40
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(err(
                s.name.span(),
                format!("syslog name {name:?} must be 1-40 characters of a-z, 0-9, '-' or '_'"),
            ));
        }
        if syslog.iter().any(|x| &x.name == name) {
            return Err(err(
                s.name.span(),
                format!("syslog {name:?} is defined twice"),
            ));
        }
        let transport = match s.transport.get_ref().as_str() {
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            other => {
                return Err(err(
                    s.transport.span(),
                    format!("syslog transport {other:?} must be \"tcp\" or \"tls\""),
                ));
            }
        };
        let (mut audit, mut checkpoints, mut alerts) = (false, false, false);
        for f in s.forward.get_ref() {
            match f.as_str() {
                "audit" => audit = true,
                "checkpoints" => checkpoints = true,
                "alerts" => alerts = true,
                other => {
                    return Err(err(
                        s.forward.span(),
                        format!(
                            "syslog forward {other:?} must be \"audit\", \"checkpoints\" or \"alerts\""
                        ),
                    ));
                }
            }
        }
        if !(audit || checkpoints || alerts) {
            return Err(err(
                s.forward.span(),
                "syslog forward names nothing to send".into(),
            ));
        }
        syslog.push(Syslog {
            name: name.clone(),
            address: host_port(&s.address, "syslog.address", err)?,
            transport,
            ca_file: file(&s.ca_file, "syslog.ca_file", err)?,
            server_name: s.server_name.clone(),
            audit,
            checkpoints,
            alerts,
        });
    }

    let knowledge_dir = match &raw.knowledge.articles {
        None => None,
        Some(s) if std::path::Path::new(s.get_ref()).is_dir() => Some(PathBuf::from(s.get_ref())),
        Some(s) => {
            return Err(err(
                s.span(),
                format!("knowledge.articles: {:?} is not a directory", s.get_ref()),
            ));
        }
    };
    Ok(Integrations {
        delivery,
        alerts,
        smtp,
        syslog,
        knowledge_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_hours_parse_and_contain() {
        let h = parse_business_hours("Mon-Fri 08:00-18:00", 3600).unwrap();
        assert_eq!(h.days, 0b0011111);
        // 2026-11-30 is a Monday; 07:30 UTC is 08:30 at +01:00.
        let monday_0730 = 1_796_023_800;
        assert!(h.contains(monday_0730));
        assert!(!h.contains(monday_0730 - 3600));
        assert!(!h.contains(monday_0730 - 2 * 86_400), "Saturday");
        assert_eq!(
            parse_business_hours("Mon,Wed 00:00-24:00", 0).unwrap().days,
            0b101
        );
        for bad in [
            "Mon-Fri",
            "Fri-Mon 08:00-18:00",
            "Mon 18:00-08:00",
            "Xyz 08:00-09:00",
            "Mon 25:00-26:00",
        ] {
            assert!(parse_business_hours(bad, 0).is_err(), "{bad}");
        }
        assert_eq!(parse_offset("-05:30").unwrap(), -(5 * 3600 + 1800));
        assert!(parse_offset("01:00").is_err());
    }
}
