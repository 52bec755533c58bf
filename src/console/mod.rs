//! `custos console`: the terminal console for compliance officers and administrators.
//!
//! It never opens the database: it logs in like any user and works through the appliance's API,
//! over the Unix socket in the data directory (or HTTPS with a pinned certificate), so every act
//! is authorized and audited exactly as over the web. `state` holds every transition (pure),
//! `ui` draws, `client` runs commands in the background: the screen never waits on the network,
//! a spinner turns while requests are in flight.

pub mod client;
pub mod state;
pub mod ui;

use std::io::Write;
use std::time::Duration;

use crossterm::event::{self, Event, KeyEventKind};
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;

use crate::client::Endpoint;
use state::{Command, Console, Outcome};

/// Puts the terminal back however the console ends (a panic included).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = disable_raw_mode();
        let mut out = std::io::stdout();
        let _ = crossterm::execute!(out, LeaveAlternateScreen, crossterm::cursor::Show);
        let _ = out.flush();
    }
}

/// Runs the console until the user quits.
pub fn run(ep: Endpoint) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    enable_raw_mode()?;
    let _restore = Restore;
    let mut out = std::io::stdout();
    crossterm::execute!(out, EnterAlternateScreen)?;
    let mut term = Terminal::new(CrosstermBackend::new(out))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
    let mut c = Console::new();
    let spawn = |c: &Console, cmds: Vec<Command>| {
        for cmd in cmds {
            let (ep, tx, token) = (ep.clone(), tx.clone(), c.token.clone());
            rt.spawn(async move {
                let o = client::run(&ep, token.as_deref(), cmd).await;
                let _ = tx.send(o);
            });
        }
    };
    while !c.quit {
        term.draw(|f| ui::draw(f, &c))?;
        if event::poll(Duration::from_millis(100))? {
            match event::read()? {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    let cmds = c.on_key(k);
                    spawn(&c, cmds);
                }
                _ => {}
            }
        } else {
            let cmds = c.on_tick();
            spawn(&c, cmds);
        }
        while let Ok(o) = rx.try_recv() {
            let cmds = c.on_outcome(o);
            spawn(&c, cmds);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::state::*;
    use super::ui;

    /// A console with fixture data on `screen`.
    fn fixture(screen: Screen) -> Console {
        let mut c = Console::new();
        c.on_outcome(Outcome::LoggedIn {
            token: "t".into(),
            name: "olga".into(),
            role: "compliance".into(),
        });
        c.on_outcome(Outcome::Dashboard {
            agents: vec![
                AgentRow {
                    name: "alice".into(),
                    status: "available".into(),
                    since_s: 754,
                    sessions: 2,
                },
                AgentRow {
                    name: "bob".into(),
                    status: "away".into(),
                    since_s: 3720,
                    sessions: 0,
                },
            ],
            queues: vec![
                QueueRow {
                    portal: "support".into(),
                    skill: "general".into(),
                    waiting: 3,
                    longest_wait_s: 185,
                },
                QueueRow {
                    portal: "billing".into(),
                    skill: "invoices".into(),
                    waiting: 0,
                    longest_wait_s: 0,
                },
            ],
            system: Some(SystemInfo {
                appliance_id: "5f0c2a9e41b7d3c8".into(),
                version: "0.1.0".into(),
                sealed: false,
                unseal_mode: "key file".into(),
                kek_epoch: 2,
                audit_entries: 1284,
                checkpoint_size: Some(1280),
                checkpoint_at: "2026-11-28T10:29:00Z".into(),
                checkpoint_key: "custos-5f0c2a9e41b7d3c8+9a3e51c2".into(),
                fingerprint: "3A:9F:...:C1".into(),
                holds_active: 1,
                archive_objects: 4210,
                archive_bytes: 3_221_225_472,
                database_bytes: 48_234_496,
                disk: Some((107_374_182_400, 86_973_087_744)),
                today: Today {
                    requested: 42,
                    accepted: 39,
                    ended: 36,
                    cancelled: 2,
                    surveys: 17,
                    survey_average: Some(4.35),
                },
                services: [
                    ("https", "running", "listening on 0.0.0.0:8443"),
                    (
                        "checkpoints",
                        "running",
                        "every 5 s while the log grows; latest at size 1280",
                    ),
                    (
                        "retention sweep",
                        "running",
                        "hourly; last 2026-11-28 10:00: 12 shredded, 3 held",
                    ),
                    ("webhooks", "running", "1 endpoints; 0 pending, 0 given up"),
                    ("e-mail", "off", "no [smtp] server configured"),
                    (
                        "syslog siem",
                        "running",
                        "to 10.0.0.5:6514; 0 audit entries to forward",
                    ),
                    ("knowledge base", "off", "API articles only"),
                ]
                .iter()
                .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
                .collect(),
            }),
            alerts: vec![
                Alert {
                    time: "2026-11-28 09:58:00".into(),
                    summary: "queue support/general: 12 waiting (threshold 10)".into(),
                },
                Alert {
                    time: "2026-11-28 10:21:00".into(),
                    summary: "survey rated 1 of 5 in session sess_fixture00000000000003".into(),
                },
            ],
            per_day: vec![31, 40, 38, 12, 9, 35, 44, 41, 39, 47, 15, 11, 36, 42],
        });
        c.on_outcome(Outcome::Sessions {
            rows: (0..5)
                .map(|i| SessionRow {
                    id: format!("sess_fixture{i:014}"),
                    status: if i == 0 {
                        "active".into()
                    } else {
                        "ended".into()
                    },
                    portal: "support".into(),
                    agent: "alice".into(),
                    external_ref: format!("CRM-{}", 100 + i),
                    requested_at: format!("2026-11-2{i}T09:1{i}:00Z"),
                    survey: (i > 1).then_some(5 - i as i64 / 2),
                })
                .collect(),
            next: Some("CURSOR".into()),
        });
        c.on_outcome(Outcome::Holds(vec![HoldRow {
            id: 7,
            scope: "ref".into(),
            value: "CRM-101".into(),
            case_id: "LIT-2026-4".into(),
            reason: "litigation hold, Smith v. Clinic".into(),
            placed_by: "olga".into(),
            placed_at: "2026-11-27T15:00:00Z".into(),
        }]));
        c.on_outcome(Outcome::Audit {
            checkpoint: Some((1280, "custos-5f0c2a9e41b7d3c8+9a3e51c2".into())),
            entries: (0..30)
                .map(|i| AuditLine {
                    seq: 1250 + i,
                    time: format!("2026-11-28T10:{:02}:00.000Z", i),
                    actor: if i % 3 == 0 {
                        "alice".into()
                    } else {
                        "system".into()
                    },
                    action: if i % 5 == 0 {
                        "session.read".into()
                    } else {
                        "request.created".into()
                    },
                    target: format!("session:sess_{i}"),
                    outcome: if i == 29 {
                        "denied".into()
                    } else {
                        "success".into()
                    },
                })
                .collect(),
        });
        c.on_outcome(Outcome::Plan {
            lines: vec![
                PlanLine {
                    policy: "hipaa-six-years".into(),
                    due: [0, 0, 12, 40],
                    held: 3,
                    total: 120,
                },
                PlanLine {
                    policy: "gdpr-support-90-days".into(),
                    due: [5, 31, 88, 88],
                    held: 1,
                    total: 90,
                },
            ],
            policies: vec![
                PolicyLine {
                    name: "gdpr-support-90-days".into(),
                    selects: "portals support".into(),
                    retain_days: 90,
                    action: "shred".into(),
                    mode: "governance".into(),
                },
                PolicyLine {
                    name: "hipaa-six-years".into(),
                    selects: "classes transcript,file; fields department=clinical".into(),
                    retain_days: 2190,
                    action: "review".into(),
                    mode: "compliance".into(),
                },
            ],
        });
        c.on_outcome(Outcome::Users {
            users: vec![
                UserLine {
                    name: "admin".into(),
                    role: "admin".into(),
                    disabled: false,
                    created_at: "2026-11-01T08:00:00Z".into(),
                },
                UserLine {
                    name: "olga".into(),
                    role: "compliance".into(),
                    disabled: false,
                    created_at: "2026-11-02T08:00:00Z".into(),
                },
                UserLine {
                    name: "carl".into(),
                    role: "agent".into(),
                    disabled: true,
                    created_at: "2026-11-03T08:00:00Z".into(),
                },
            ],
            tokens: vec![TokenLine {
                id: "3f2a9c1d00b1e2f3".into(),
                user: "crm".into(),
                name: "CRM sync".into(),
                scopes: "read_any_session".into(),
                expires_at: "2027-02-26T00:00:00Z".into(),
            }],
        });
        c.screen = Some(screen);
        c.busy = 0;
        c
    }

    fn render(c: &Console, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| ui::draw(f, c)).unwrap();
        // (TestBackend cannot print a zero-width buffer; drawing it is what is tested.)
        if w == 0 {
            String::new()
        } else {
            t.backend().to_string()
        }
    }

    #[test]
    fn every_screen_at_80x24_and_160x48() {
        let mut detail = fixture(Screen::Sessions);
        detail.on_outcome(Outcome::Detail(Detail {
            id: "sess_fixture00000000000001".into(),
            fields: vec![
                ("Status".into(), "ended".into()),
                ("Customer".into(), "Fay Caller".into()),
                ("Reference".into(), "CRM-101".into()),
            ],
            transcript: vec![
                "09:11:02 Fay Caller (chat): My VPN drops".into(),
                "09:11:40 alice (chat): Let me look".into(),
            ],
            access: vec![
                "2026-11-27 16:02:11 alice (agent) session.read success".into(),
                "2026-11-28 10:14:03 olga (compliance) session.read success: complaint 88".into(),
            ],
            timeline: vec![
                "2026-11-21 09:11:00 requested by Fay Caller on support/general".into(),
                "2026-11-21 09:11:01 customer Fay Caller joined".into(),
                "2026-11-21 09:11:02 chat from Fay Caller".into(),
                "2026-11-21 09:11:30 accepted by alice".into(),
                "2026-11-21 09:11:30 agent alice joined".into(),
                "2026-11-21 09:12:10 diagnostics received: Debian GNU/Linux 12".into(),
                "2026-11-21 09:14:55 file vpn.log (5120 bytes) from customer".into(),
                "2026-11-21 09:20:00 session ended".into(),
                "2026-11-21 09:20:40 survey: rated 5 of 5".into(),
            ],
            retention: vec![
                "transcript until 2027-02-19, held by hold 7 (gdpr-support-90-days)".into(),
                "file until 2027-02-19, held by hold 7 (gdpr-support-90-days)".into(),
            ],
            show_timeline: false,
            scroll: 0,
        }));
        let mut timeline = fixture(Screen::Sessions);
        timeline.detail = detail.detail.clone();
        timeline.on_key(crossterm::event::KeyEvent::new(
            crossterm::event::KeyCode::Char('t'),
            crossterm::event::KeyModifiers::NONE,
        ));
        let mut exporting = fixture(Screen::Sessions);
        exporting.export = Some(ExportProgress {
            id: 1,
            state: "running".into(),
            done: 2,
            total: 5,
            path: "custos-export.tar".into(),
            message: String::new(),
        });
        let mut policy_check = fixture(Screen::Policies);
        policy_check.policy_check = Some((
            false,
            vec![
                "policies/clinical.toml:4: policy clinical: retain_days = 0 is out of range (1 to 36500)".into(),
                "policies/clinical.toml:9: policy clinical: action \"delete\" is not \"shred\" or \"review\"".into(),
            ],
        ));
        let mut rotate = fixture(Screen::System);
        rotate.on_key(crossterm::event::KeyEvent::new(
            crossterm::event::KeyCode::Char('k'),
            crossterm::event::KeyModifiers::NONE,
        ));
        let mut help = fixture(Screen::Dashboard);
        help.help = true;
        let mut hold_form = fixture(Screen::Holds);
        hold_form.on_key(crossterm::event::KeyEvent::new(
            crossterm::event::KeyCode::Char('n'),
            crossterm::event::KeyModifiers::NONE,
        ));
        let mut verifying = fixture(Screen::Audit);
        verifying.verify = Some(Verification {
            id: 1,
            state: "running".into(),
            checked: 642,
            total: 1284,
            summary: String::new(),
        });
        let mut verified = fixture(Screen::Audit);
        verified.verify = Some(Verification {
            id: 1,
            state: "intact".into(),
            checked: 1284,
            total: 1284,
            summary: "Audit log intact: 1284 entries, 57 checkpoints verified; root 9b1c04e5a7d2f3e1…; key custos/5f0c2a9e41b7d3c8".into(),
        });
        let cases = [
            ("login", Console::new()),
            ("dashboard", fixture(Screen::Dashboard)),
            ("sessions", fixture(Screen::Sessions)),
            ("detail", detail),
            ("timeline", timeline),
            ("exporting", exporting),
            ("holds", fixture(Screen::Holds)),
            ("hold_form", hold_form),
            ("audit", fixture(Screen::Audit)),
            ("audit_verifying", verifying),
            ("audit_verified", verified),
            ("policies", fixture(Screen::Policies)),
            ("policy_check", policy_check),
            ("users", fixture(Screen::Users)),
            ("system", fixture(Screen::System)),
            ("rotate_form", rotate),
            ("help", help),
        ];
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/console.md"))
            .unwrap();
        for (name, c) in &cases {
            for (w, h) in [(80, 24), (160, 48)] {
                insta::assert_snapshot!(format!("{name}_{w}x{h}"), render(c, w, h));
            }
        }
        for (name, c) in &cases {
            // docs/console.md shows each screen as it is.
            let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
            t.draw(|f| ui::draw(f, c)).unwrap();
            let buf = t.backend().buffer();
            let text: Vec<String> = (0..24)
                .map(|y| {
                    (0..80)
                        .map(|x| buf[(x, y)].symbol().to_string())
                        .collect::<String>()
                })
                .collect();
            assert!(
                doc.contains(&text.join("\n")),
                "docs/console.md does not show the {name} screen as drawn now"
            );
        }
    }

    #[test]
    fn no_size_makes_it_panic() {
        let c = fixture(Screen::Audit);
        for (w, h) in [(0, 0), (1, 1), (0, 24), (80, 0), (3, 2), (20, 5), (300, 3)] {
            for s in SCREENS {
                let mut c2 = fixture(s);
                c2.help = true;
                render(&c2, w, h);
            }
            render(&c, w, h);
            render(&Console::new(), w, h);
        }
    }
}
