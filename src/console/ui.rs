//! Drawing the console: a header with the screens, the screen, and a help line with its keys.
//! Plain colours that read on a VGA text console; selection is shown reversed, not by colour
//! alone. Draws at any size, zero included.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Gauge, Paragraph, Row, Sparkline, Table, Wrap,
};

use super::state::{Console, FormKind, SCREENS, Screen};

const SPINNER: [&str; 4] = ["|", "/", "-", "\\"];

fn selected() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}

fn heading() -> Style {
    Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
}

/// A byte count in binary units (`1.5 GiB`).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn duration(s: u64) -> String {
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// A box of at most `w` x `h` centred in `area`.
fn popup(area: Rect, w: u16, h: u16) -> Rect {
    let (w, h) = (area.width.min(w), area.height.min(h));
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

pub fn draw(f: &mut Frame<'_>, c: &Console) {
    let area = f.area();
    if area.width == 0 || area.height == 0 {
        return;
    }
    let [top, body, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    header(f, top, c);
    match (c.screen, &c.detail) {
        (None, _) => {}
        (Some(Screen::Sessions), Some(_)) => detail(f, body, c),
        (Some(Screen::Dashboard), _) => dashboard(f, body, c),
        (Some(Screen::Sessions), None) => sessions(f, body, c),
        (Some(Screen::Holds), _) => holds(f, body, c),
        (Some(Screen::Audit), _) => audit(f, body, c),
        (Some(Screen::Policies), _) => policies(f, body, c),
        (Some(Screen::Users), _) => users(f, body, c),
        (Some(Screen::System), _) => system(f, body, c),
    }
    footer(f, bottom, c);
    if let Some((kind, form)) = &c.form {
        let r = popup(area, 70, form.inputs.len() as u16 * 2 + 3);
        f.render_widget(Clear, r);
        let mut lines = Vec::new();
        for (i, input) in form.inputs.iter().enumerate() {
            let shown = if input.secret {
                "*".repeat(input.text.chars().count())
            } else {
                input.text.clone()
            };
            let style = if i == form.focus {
                selected()
            } else {
                Style::new()
            };
            lines.push(Line::from(vec![
                Span::raw(format!("{}: ", input.label)),
                Span::styled(format!("{shown}_"), style),
            ]));
            lines.push(Line::raw(""));
        }
        let title = if *kind == FormKind::Login {
            format!(" {} ", form.title)
        } else {
            format!(" {} (Esc cancels) ", form.title)
        };
        f.render_widget(
            Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(title)),
            r,
        );
    }
    if c.help {
        let text = [
            "Tab / Shift+Tab   next / previous screen   1-7  go to a screen",
            "Up / Down         move                     Enter  open",
            "/                 search, filter           r      refresh",
            "PgDn / PgUp       next / previous page     Esc    back, cancel",
            "n / x             place / release a hold   v      verify the audit log",
            "n / d / x         new user / disable user / revoke token (Users)",
            "e                 export the sessions listed (a signed bundle)",
            "t                 a session's timeline or transcript",
            "s / u / k         seal / unseal / rotate keys (System)",
            "c                 check policy files (Policies)",
            "q                 quit",
            "",
            "Any key closes this help.",
        ];
        let r = popup(area, 72, text.len() as u16 + 2);
        f.render_widget(Clear, r);
        let lines: Vec<Line> = text.iter().map(|t| Line::raw(*t)).collect();
        f.render_widget(
            Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(" Keys ")),
            r,
        );
    }
}

fn header(f: &mut Frame<'_>, r: Rect, c: &Console) {
    let right = match &c.user {
        Some((n, role)) => format!("{n} ({role}) "),
        None => String::new(),
    };
    let spin = if c.busy > 0 {
        SPINNER[c.spin % SPINNER.len()]
    } else {
        " "
    };
    let tabs = |short: bool| -> Vec<Span<'static>> {
        let mut spans = vec![Span::styled(" Custos ", heading())];
        if c.user.is_none() {
            return spans;
        }
        for (i, s) in SCREENS.iter().enumerate() {
            let style = if c.screen == Some(*s) {
                selected()
            } else {
                Style::new()
            };
            let t = if short { s.short() } else { s.title() };
            spans.push(Span::styled(format!(" {} {t} ", i + 1), style));
        }
        spans
    };
    let width = |spans: &[Span<'_>]| {
        spans
            .iter()
            .map(|s| s.content.chars().count())
            .sum::<usize>()
    };
    let mut spans = tabs(false);
    if width(&spans) + right.chars().count() + 2 > r.width as usize {
        spans = tabs(true);
    }
    let used = width(&spans);
    // The user's name goes where it fits; the spinner always shows.
    let right = if used + right.chars().count() + 2 <= r.width as usize {
        right
    } else {
        String::new()
    };
    let pad = (r.width as usize).saturating_sub(used + right.chars().count() + 2);
    spans.push(Span::raw(" ".repeat(pad)));
    spans.push(Span::raw(right));
    spans.push(Span::raw(format!("{spin} ")));
    f.render_widget(Paragraph::new(Line::from(spans)), r);
}

fn footer(f: &mut Frame<'_>, r: Rect, c: &Console) {
    let line = match &c.status {
        Some((m, true)) => Line::from(Span::styled(
            format!(" {m}"),
            Style::new().fg(Color::White).bg(Color::Red),
        )),
        Some((m, false)) => Line::from(Span::styled(
            format!(" {m}"),
            Style::new().fg(Color::Black).bg(Color::Green),
        )),
        None => {
            let keys = match (c.screen, c.detail.is_some(), c.form.is_some()) {
                _ if matches!(c.form, Some((FormKind::Login, _))) => {
                    "Enter next/sign in  Tab move  Ctrl+C quit"
                }
                (_, _, true) => "Enter next/submit  Tab move  Esc cancel",
                (None, _, _) => "",
                (Some(Screen::Sessions), true, _) => {
                    "Up/Down scroll  t timeline/transcript  Esc back  ? help  q quit"
                }
                (Some(Screen::Sessions), false, _) => {
                    "/ search  Enter open  e export  PgDn/PgUp page  Tab  ? help  q quit"
                }
                (Some(Screen::Holds), _, _) => {
                    "n place hold  x release  Tab screens  ? help  q quit"
                }
                (Some(Screen::Audit), _, _) => {
                    "/ filter  v verify  r refresh  Tab screens  ? help  q quit"
                }
                (Some(Screen::Users), _, _) => {
                    "n new user  d disable user  x revoke token  Tab screens  ? help  q quit"
                }
                (Some(Screen::Policies), _, _) => {
                    "c check policy files  r refresh  Tab screens  ? help  q quit"
                }
                (Some(Screen::System), _, _) => {
                    "s seal  u unseal  k rotate keys  Tab screens  ? help  q quit"
                }
                (Some(_), _, _) => "r refresh  Tab screens  ? help  q quit",
            };
            Line::from(Span::styled(
                format!(" {keys}"),
                Style::new().add_modifier(Modifier::DIM),
            ))
        }
    };
    f.render_widget(Paragraph::new(line), r);
}

fn block(title: &str) -> Block<'static> {
    Block::new()
        .borders(Borders::ALL)
        .title(Span::styled(format!(" {title} "), heading()))
}

fn dashboard(f: &mut Frame<'_>, r: Rect, c: &Console) {
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(r);
    let [agents_r, queues_r] =
        Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(left);
    let rows = c.agents.iter().map(|a| {
        Row::new(vec![
            a.name.clone(),
            a.status.clone(),
            duration(a.since_s),
            a.sessions.to_string(),
        ])
    });
    let t = Table::new(
        rows,
        [
            Constraint::Min(10),
            Constraint::Length(10),
            Constraint::Length(7),
            Constraint::Length(8),
        ],
    )
    .header(Row::new(vec!["Agent", "Status", "Since", "Sessions"]).style(heading()))
    .block(block("Agents"));
    f.render_widget(t, agents_r);
    let rows = c.queues.iter().map(|q| {
        Row::new(vec![
            format!("{}/{}", q.portal, q.skill),
            q.waiting.to_string(),
            duration(q.longest_wait_s),
        ])
    });
    let t = Table::new(
        rows,
        [
            Constraint::Min(12),
            Constraint::Length(8),
            Constraint::Length(12),
        ],
    )
    .header(Row::new(vec!["Queue", "Waiting", "Longest"]).style(heading()))
    .block(block("Queues"));
    f.render_widget(t, queues_r);
    let [appliance_r, today_r, alerts_r] = Layout::vertical([
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Min(0),
    ])
    .areas(right);
    let waiting: u64 = c.queues.iter().map(|q| q.waiting).sum();
    let available = c.agents.iter().filter(|a| a.status == "available").count();
    let mut lines = Vec::new();
    let mut today = Vec::new();
    match &c.system {
        Some(s) => {
            let seal = if s.sealed {
                Span::styled("SEALED", Style::new().fg(Color::White).bg(Color::Red))
            } else {
                Span::raw("unsealed")
            };
            lines.push(Line::from(vec![
                Span::raw("State:      "),
                seal,
                Span::raw(format!(", key epoch {}", s.kek_epoch)),
            ]));
            lines.push(Line::raw(format!(
                "Checkpoint: {}",
                s.checkpoint_size
                    .map_or("none yet".to_string(), |n| format!(
                        "size {n}, {}",
                        s.checkpoint_at.get(11..19).unwrap_or("")
                    ))
            )));
            lines.push(Line::raw(format!(
                "Holds:      {} in force",
                s.holds_active
            )));
            lines.push(Line::raw(format!(
                "Archive:    {} in {} objects",
                bytes(s.archive_bytes),
                s.archive_objects
            )));
            lines.push(Line::raw(format!(
                "Database:   {}",
                bytes(s.database_bytes)
            )));
            lines.push(Line::raw(match s.disk {
                Some((total, free)) => {
                    format!("Disk:       {} free of {}", bytes(free), bytes(total))
                }
                None => "Disk:       unknown".into(),
            }));
            let t = &s.today;
            today.push(Line::raw(format!(
                "Requests {}  accepted {}  ended {}",
                t.requested, t.accepted, t.ended
            )));
            today.push(Line::raw(format!(
                "Cancelled {}  surveys {}{}",
                t.cancelled,
                t.surveys,
                t.survey_average
                    .map_or(String::new(), |a| format!(" (average {a:.1})"))
            )));
        }
        None => lines.push(Line::raw(
            "Appliance status needs the admin or compliance role.",
        )),
    }
    today.push(Line::raw(format!(
        "Waiting now {waiting}  agents available {available}"
    )));
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block("Appliance")),
        appliance_r,
    );
    let b = block("Today (UTC)");
    let inner = b.inner(today_r);
    f.render_widget(b, today_r);
    let [text_r, chart_r] =
        Layout::vertical([Constraint::Length(3), Constraint::Min(0)]).areas(inner);
    f.render_widget(Paragraph::new(today).wrap(Wrap { trim: false }), text_r);
    if !c.per_day.is_empty() && chart_r.height > 0 {
        let most = c.per_day.iter().max().copied().unwrap_or(0);
        let [label_r, spark_r] =
            Layout::horizontal([Constraint::Length(22), Constraint::Min(0)]).areas(chart_r);
        f.render_widget(Paragraph::new(format!("14 days (max {most}/day)")), label_r);
        f.render_widget(
            Sparkline::default()
                .data(&c.per_day)
                .style(Style::new().fg(Color::Cyan)),
            spark_r,
        );
    }
    let alerts: Vec<Line> = if c.alerts.is_empty() {
        vec![Line::raw("No alerts.")]
    } else {
        c.alerts
            .iter()
            .map(|a| {
                Line::from(vec![
                    Span::styled(
                        format!("{} ", a.time.get(5..16).unwrap_or(&a.time)),
                        Style::new().fg(Color::Yellow),
                    ),
                    Span::raw(a.summary.clone()),
                ])
            })
            .collect()
    };
    f.render_widget(
        Paragraph::new(alerts)
            .wrap(Wrap { trim: false })
            .block(block("Latest alerts")),
        alerts_r,
    );
}

fn sessions(f: &mut Frame<'_>, r: Rect, c: &Console) {
    let r = match &c.export {
        Some(e) => {
            let [top, rest] =
                Layout::vertical([Constraint::Length(3), Constraint::Min(0)]).areas(r);
            let ratio = if e.total == 0 {
                0.0
            } else {
                (e.done as f64 / e.total as f64).clamp(0.0, 1.0)
            };
            let g = Gauge::default()
                .block(block(&format!("Export to {}", e.path)))
                .gauge_style(Style::new().fg(Color::Cyan).bg(Color::Black))
                .ratio(ratio)
                .label(format!("{} of {} sessions in the bundle", e.done, e.total));
            f.render_widget(g, top);
            rest
        }
        None => r,
    };
    let title = if c.query.is_empty() {
        format!("Sessions, page {}", c.pages.len() + 1)
    } else {
        format!(
            "Sessions matching {:?}, page {}",
            c.query,
            c.pages.len() + 1
        )
    };
    let rows = c.sessions.iter().enumerate().map(|(i, s)| {
        let style = if i == c.session_sel {
            selected()
        } else {
            Style::new()
        };
        Row::new(vec![
            Cell::from(
                s.requested_at
                    .get(..16)
                    .unwrap_or(&s.requested_at)
                    .replace('T', " "),
            ),
            Cell::from(s.status.clone()),
            Cell::from(s.portal.clone()),
            Cell::from(s.agent.clone()),
            Cell::from(s.external_ref.clone()),
            Cell::from(s.survey.map_or(String::new(), |v| v.to_string())),
            Cell::from(s.id.clone()),
        ])
        .style(style)
    });
    let t = Table::new(
        rows,
        [
            Constraint::Length(16),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(12),
            Constraint::Length(6),
            Constraint::Min(10),
        ],
    )
    .header(
        Row::new(vec![
            "Requested",
            "Status",
            "Portal",
            "Agent",
            "Ref",
            "Survey",
            "Id",
        ])
        .style(heading()),
    )
    .block(block(&title));
    f.render_widget(t, r);
}

fn detail(f: &mut Frame<'_>, r: Rect, c: &Console) {
    let d = c.detail.as_ref().expect("a detail");
    let h = ((d.fields.len() + d.retention.len()) as u16 + 2).min(r.height / 2);
    let [top, bottom] = Layout::vertical([Constraint::Length(h), Constraint::Min(0)]).areas(r);
    let [fields_r, access_r] = if d.access.is_empty() {
        [top, Rect::default()]
    } else {
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(top)
    };
    let mut lines: Vec<Line> = d
        .fields
        .iter()
        .map(|(k, v)| {
            Line::from(vec![
                Span::styled(format!("{k:<12}"), heading()),
                Span::raw(v.clone()),
            ])
        })
        .collect();
    for (i, r) in d.retention.iter().enumerate() {
        let label = if i == 0 { "Retention" } else { "" };
        lines.push(Line::from(vec![
            Span::styled(format!("{label:<12}"), heading()),
            Span::raw(r.clone()),
        ]));
    }
    f.render_widget(
        Paragraph::new(lines).block(block(&format!("Session {}", d.id))),
        fields_r,
    );
    if !d.access.is_empty() {
        let lines: Vec<Line> = d
            .access
            .iter()
            .rev()
            .map(|a| Line::raw(a.clone()))
            .collect();
        f.render_widget(
            Paragraph::new(lines).block(block(&format!("Access history ({})", d.access.len()))),
            access_r,
        );
    }
    let (shown, title) = if d.show_timeline {
        (
            &d.timeline,
            format!("Timeline ({} events; t: transcript)", d.timeline.len()),
        )
    } else {
        (
            &d.transcript,
            format!(
                "Transcript ({} lines, reading is audited; t: timeline)",
                d.transcript.len()
            ),
        )
    };
    let lines: Vec<Line> = shown
        .iter()
        .skip(d.scroll)
        .map(|t| Line::raw(t.clone()))
        .collect();
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block(&title)),
        bottom,
    );
}

fn holds(f: &mut Frame<'_>, r: Rect, c: &Console) {
    let rows = c.holds.iter().enumerate().map(|(i, h)| {
        let style = if i == c.hold_sel {
            selected()
        } else {
            Style::new()
        };
        Row::new(vec![
            h.id.to_string(),
            format!("{} {}", h.scope, h.value),
            h.case_id.clone(),
            h.placed_by.clone(),
            h.placed_at.get(..10).unwrap_or(&h.placed_at).to_string(),
            h.reason.clone(),
        ])
        .style(style)
    });
    let t = Table::new(
        rows,
        [
            Constraint::Length(4),
            Constraint::Min(14),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Min(10),
        ],
    )
    .header(Row::new(vec!["Id", "Scope", "Case", "Placed by", "Placed", "Reason"]).style(heading()))
    .block(block(&format!("Legal holds in force ({})", c.holds.len())));
    f.render_widget(t, r);
}

fn audit(f: &mut Frame<'_>, r: Rect, c: &Console) {
    let r = match &c.verify {
        Some(v) => {
            let [top, rest] =
                Layout::vertical([Constraint::Length(3), Constraint::Min(0)]).areas(r);
            let b = block("Verification (v)");
            if v.state == "running" {
                let ratio = if v.total == 0 {
                    0.0
                } else {
                    (v.checked as f64 / v.total as f64).clamp(0.0, 1.0)
                };
                let g = Gauge::default()
                    .block(b)
                    .gauge_style(Style::new().fg(Color::Cyan).bg(Color::Black))
                    .ratio(ratio)
                    .label(format!("{} of {} entries rehashed", v.checked, v.total));
                f.render_widget(g, top);
            } else {
                let style = if v.state == "intact" {
                    Style::new().fg(Color::Green)
                } else {
                    Style::new().fg(Color::White).bg(Color::Red)
                };
                f.render_widget(
                    Paragraph::new(Span::styled(v.summary.clone(), style)).block(b),
                    top,
                );
            }
            rest
        }
        None => r,
    };
    let visible = r.height.saturating_sub(3) as usize;
    let start = c.audit_sel.saturating_add(1).saturating_sub(visible);
    let rows = c.audit.iter().enumerate().skip(start).map(|(i, e)| {
        let style = if i == c.audit_sel {
            selected()
        } else if e.outcome != "success" {
            Style::new().fg(Color::Yellow)
        } else {
            Style::new()
        };
        Row::new(vec![
            e.seq.to_string(),
            e.time.get(11..19).unwrap_or(&e.time).to_string(),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone(),
            e.outcome.clone(),
        ])
        .style(style)
    });
    let t = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(8),
            Constraint::Length(14),
            Constraint::Min(18),
            Constraint::Min(14),
            Constraint::Length(8),
        ],
    )
    .header(Row::new(vec!["Seq", "Time", "Actor", "Action", "Target", "Outcome"]).style(heading()))
    .block(block(&audit_title(c)));
    f.render_widget(t, r);
}

fn audit_title(c: &Console) -> String {
    let mut t = "Audit log (live)".to_string();
    if !c.audit_filter.is_empty() {
        t.push_str(&format!(", filter {:?}", c.audit_filter));
    }
    if let Some((size, key)) = &c.audit_checkpoint {
        t.push_str(&format!("; checkpoint {size} signed by {key}"));
    }
    t
}

fn policies(f: &mut Frame<'_>, r: Rect, c: &Console) {
    // The check's lines as wrapped in the box, plus its borders.
    let inner = usize::from(r.width.saturating_sub(2)).max(1);
    let check_h = c.policy_check.as_ref().map_or(0, |(_, l)| {
        let rows: usize = l
            .iter()
            .map(|x| x.chars().count().div_ceil(inner).max(1))
            .sum();
        (rows as u16 + 2).min(r.height / 3)
    });
    let active_h = (c.policies.len() as u16 + 3).min(r.height / 3);
    let [active_r, r, check_r] = Layout::vertical([
        Constraint::Length(active_h),
        Constraint::Min(0),
        Constraint::Length(check_h),
    ])
    .areas(r);
    let rows = c.policies.iter().map(|p| {
        Row::new(vec![
            p.name.clone(),
            format!("{} days", p.retain_days),
            p.action.clone(),
            p.mode.clone(),
            p.selects.clone(),
        ])
    });
    let t = Table::new(
        rows,
        [
            Constraint::Min(20),
            Constraint::Length(10),
            Constraint::Length(7),
            Constraint::Length(11),
            Constraint::Min(20),
        ],
    )
    .header(Row::new(vec!["Policy", "Keeps", "Then", "Mode", "Selects"]).style(heading()))
    .block(block(&format!("Active policies ({})", c.policies.len())));
    f.render_widget(t, active_r);
    if let Some((valid, lines)) = &c.policy_check {
        let style = if *valid {
            Style::new().fg(Color::Green)
        } else {
            Style::new().fg(Color::Yellow)
        };
        let lines: Vec<Line> = lines
            .iter()
            .map(|l| Line::from(Span::styled(l.clone(), style)))
            .collect();
        let title = if *valid {
            "Policy check: valid (Esc closes)"
        } else {
            "Policy check: errors (Esc closes)"
        };
        f.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(block(title)),
            check_r,
        );
    }
    let rows = c.plan.iter().map(|p| {
        let mut cells = vec![p.policy.clone()];
        cells.extend(p.due.iter().map(|d| d.to_string()));
        cells.push(p.held.to_string());
        cells.push(p.total.to_string());
        Row::new(cells)
    });
    let t = Table::new(
        rows,
        [
            Constraint::Min(20),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(8),
        ],
    )
    .header(
        Row::new(vec![
            "Policy", "Due now", "30 days", "90 days", "365 days", "Held", "Objects",
        ])
        .style(heading()),
    )
    .block(block(
        "Retention plan: objects each policy removes by then (holds keep theirs)",
    ));
    f.render_widget(t, r);
}

fn users(f: &mut Frame<'_>, r: Rect, c: &Console) {
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(r);
    let rows = c.users.iter().enumerate().map(|(i, u)| {
        let style = if i == c.users_sel {
            selected()
        } else if u.disabled {
            Style::new().add_modifier(Modifier::DIM)
        } else {
            Style::new()
        };
        Row::new(vec![
            u.name.clone(),
            u.role.clone(),
            if u.disabled {
                "disabled".into()
            } else {
                "active".into()
            },
            u.created_at.get(..10).unwrap_or(&u.created_at).to_string(),
        ])
        .style(style)
    });
    let t = Table::new(
        rows,
        [
            Constraint::Min(14),
            Constraint::Length(12),
            Constraint::Length(9),
            Constraint::Length(11),
        ],
    )
    .header(Row::new(vec!["User", "Role", "State", "Created"]).style(heading()))
    .block(block(&format!("Users ({})", c.users.len())));
    f.render_widget(t, top);
    let rows = c.tokens.iter().enumerate().map(|(i, t)| {
        let style = if i + c.users.len() == c.users_sel {
            selected()
        } else {
            Style::new()
        };
        Row::new(vec![
            t.id.clone(),
            t.user.clone(),
            t.name.clone(),
            t.scopes.clone(),
            t.expires_at.get(..10).unwrap_or(&t.expires_at).to_string(),
        ])
        .style(style)
    });
    let t = Table::new(
        rows,
        [
            Constraint::Length(17),
            Constraint::Length(12),
            Constraint::Min(12),
            Constraint::Min(16),
            Constraint::Length(11),
        ],
    )
    .header(Row::new(vec!["Token", "User", "Label", "Scopes", "Expires"]).style(heading()))
    .block(block(&format!("API tokens ({})", c.tokens.len())));
    f.render_widget(t, bottom);
}

fn system(f: &mut Frame<'_>, r: Rect, c: &Console) {
    let row = |k: &str, v: String| {
        Line::from(vec![
            Span::styled(format!("{k:<14}"), heading()),
            Span::raw(v),
        ])
    };
    let lines = match &c.system {
        Some(s) => {
            let mut lines = system_lines(s, &row);
            lines.push(Line::from(Span::styled("Services", heading())));
            for (name, state, detail) in &s.services {
                let style = match state.as_str() {
                    "running" => Style::new().fg(Color::Green),
                    "off" => Style::new().add_modifier(Modifier::DIM),
                    _ => Style::new().fg(Color::Yellow),
                };
                lines.push(Line::from(vec![
                    Span::raw(format!(" {name:<16}")),
                    Span::styled(format!("{state:<8}"), style),
                    Span::raw(detail.clone()),
                ]));
            }
            lines
        }
        None => vec![Line::raw(
            "The appliance's status needs the admin or compliance role.",
        )],
    };
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block("System")),
        r,
    );
}

/// The system screen's facts, one labelled line each.
fn system_lines<'a>(
    s: &super::state::SystemInfo,
    row: &dyn Fn(&str, String) -> Line<'a>,
) -> Vec<Line<'a>> {
    vec![
        row(
            "State",
            if s.sealed {
                "SEALED: only unseal answers (u unseals)".into()
            } else {
                "unsealed, serving (s seals)".into()
            },
        ),
        row("Unseal mode", s.unseal_mode.clone()),
        row(
            "Keys",
            format!("key-encryption epoch {} (k rotates)", s.kek_epoch),
        ),
        row("Appliance", s.appliance_id.clone()),
        row("Version", s.version.clone()),
        row("Audit log", format!("{} entries", s.audit_entries)),
        row(
            "Checkpoint",
            s.checkpoint_size.map_or("none yet".to_string(), |n| {
                format!("size {n} at {}", s.checkpoint_at.replace('T', " "))
            }),
        ),
        row("Signing key", s.checkpoint_key.clone()),
        row("TLS SHA-256", s.fingerprint.clone()),
        row(
            "Storage",
            format!(
                "archive {} in {} objects, database {}",
                bytes(s.archive_bytes),
                s.archive_objects,
                bytes(s.database_bytes)
            ),
        ),
        row(
            "Disk",
            s.disk.map_or("unknown".into(), |(total, free)| {
                format!("{} free of {}", bytes(free), bytes(total))
            }),
        ),
    ]
}
