//! Drawing the console: a header with the screens, the screen, and a help line with its keys.
//! Plain colours that read on a VGA text console; selection is shown reversed, not by colour
//! alone. Draws at any size, zero included.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Gauge, Paragraph, Row, Table, Wrap};

use super::state::{Console, FormKind, SCREENS, Screen};

const SPINNER: [&str; 4] = ["|", "/", "-", "\\"];

fn selected() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}

fn heading() -> Style {
    Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
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
            "/                 search sessions          r      refresh",
            "PgDn / PgUp       next / previous page     Esc    back, cancel",
            "n / x             place / release a hold   v      verify the audit log",
            "e                 export the sessions listed (a signed bundle)",
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
                (Some(Screen::Sessions), true, _) => "Up/Down scroll  Esc back  ? help  q quit",
                (Some(Screen::Sessions), false, _) => {
                    "/ search  Enter open  e export  PgDn/PgUp page  Tab  ? help  q quit"
                }
                (Some(Screen::Holds), _, _) => {
                    "n place hold  x release  Tab screens  ? help  q quit"
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
    let mut lines = Vec::new();
    match &c.system {
        Some(s) => {
            let seal = if s.sealed {
                Span::styled("SEALED", Style::new().fg(Color::White).bg(Color::Red))
            } else {
                Span::raw("unsealed")
            };
            lines.push(Line::from(vec![Span::raw("State:       "), seal]));
            lines.push(Line::raw(format!("Appliance:   {}", s.appliance_id)));
            lines.push(Line::raw(format!("Version:     {}", s.version)));
            lines.push(Line::raw(format!(
                "Audit log:   {} entries",
                s.audit_entries
            )));
            lines.push(Line::raw(format!(
                "Checkpoint:  {}",
                s.checkpoint_size
                    .map_or("none yet".to_string(), |n| format!("signed at size {n}"))
            )));
            lines.push(Line::raw("TLS SHA-256:"));
            lines.push(Line::raw(format!(" {}", s.fingerprint)));
        }
        None => lines.push(Line::raw(
            "Appliance status needs the admin or compliance role.",
        )),
    }
    let waiting: u64 = c.queues.iter().map(|q| q.waiting).sum();
    let available = c.agents.iter().filter(|a| a.status == "available").count();
    lines.push(Line::raw(""));
    lines.push(Line::raw(format!(
        "Waiting now: {waiting}   Agents available: {available}"
    )));
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block("Appliance")),
        right,
    );
}

fn sessions(f: &mut Frame<'_>, r: Rect, c: &Console) {
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
    let h = (d.fields.len() as u16 + 2).min(r.height / 2);
    let [top, bottom] = Layout::vertical([Constraint::Length(h), Constraint::Min(0)]).areas(r);
    let [fields_r, access_r] = if d.access.is_empty() {
        [top, Rect::default()]
    } else {
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(top)
    };
    let lines: Vec<Line> = d
        .fields
        .iter()
        .map(|(k, v)| {
            Line::from(vec![
                Span::styled(format!("{k:<12}"), heading()),
                Span::raw(v.clone()),
            ])
        })
        .collect();
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
    let lines: Vec<Line> = d
        .transcript
        .iter()
        .skip(d.scroll)
        .map(|t| Line::raw(t.clone()))
        .collect();
    let title = format!(
        "Transcript ({} lines, reading is audited)",
        d.transcript.len()
    );
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
    let start = (c.audit_sel + 1).saturating_sub(visible);
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
    .block(block("Audit log (live)"));
    f.render_widget(t, r);
}

fn policies(f: &mut Frame<'_>, r: Rect, c: &Console) {
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
    let rows = c.users.iter().map(|u| {
        let style = if u.disabled {
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
    let rows = c.tokens.iter().map(|t| {
        Row::new(vec![
            t.id.clone(),
            t.user.clone(),
            t.name.clone(),
            t.scopes.clone(),
            t.expires_at.get(..10).unwrap_or(&t.expires_at).to_string(),
        ])
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
    let lines = match &c.system {
        Some(s) => vec![
            Line::from(vec![
                Span::styled("State         ", heading()),
                Span::raw(if s.sealed {
                    "SEALED: only unseal answers"
                } else {
                    "unsealed, serving"
                }),
            ]),
            Line::from(vec![
                Span::styled("Unseal mode   ", heading()),
                Span::raw(s.unseal_mode.clone()),
            ]),
            Line::from(vec![
                Span::styled("Key epoch     ", heading()),
                Span::raw(format!(
                    "KEK epoch {} (rotate: custos key rotate)",
                    s.kek_epoch
                )),
            ]),
            Line::from(vec![
                Span::styled("Appliance     ", heading()),
                Span::raw(s.appliance_id.clone()),
            ]),
            Line::from(vec![
                Span::styled("Version       ", heading()),
                Span::raw(s.version.clone()),
            ]),
            Line::from(vec![
                Span::styled("Audit log     ", heading()),
                Span::raw(format!("{} entries", s.audit_entries)),
            ]),
            Line::from(vec![
                Span::styled("Checkpoint    ", heading()),
                Span::raw(
                    s.checkpoint_size
                        .map_or("none yet".to_string(), |n| format!("signed at size {n}")),
                ),
            ]),
            Line::from(vec![
                Span::styled("TLS SHA-256   ", heading()),
                Span::raw(s.fingerprint.clone()),
            ]),
        ],
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
