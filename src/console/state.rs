//! The console's state and every transition: keys in, commands out, results in. Pure: no I/O and
//! no rendering, so each behaviour is tested without a terminal.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// The screens, in Tab order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    Dashboard,
    Sessions,
    Policies,
    Holds,
    Audit,
    Users,
    System,
}

pub const SCREENS: [Screen; 7] = [
    Screen::Dashboard,
    Screen::Sessions,
    Screen::Policies,
    Screen::Holds,
    Screen::Audit,
    Screen::Users,
    Screen::System,
];

impl Screen {
    /// A short title for narrow terminals.
    pub fn short(self) -> &'static str {
        match self {
            Screen::Dashboard => "Dash",
            Screen::Sessions => "Sess",
            Screen::Policies => "Policy",
            Screen::Holds => "Holds",
            Screen::Audit => "Audit",
            Screen::Users => "Users",
            Screen::System => "System",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Screen::Dashboard => "Dashboard",
            Screen::Sessions => "Sessions",
            Screen::Policies => "Policies",
            Screen::Holds => "Holds",
            Screen::Audit => "Audit",
            Screen::Users => "Users",
            Screen::System => "System",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentRow {
    pub name: String,
    pub status: String,
    pub since_s: u64,
    pub sessions: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueRow {
    pub portal: String,
    pub skill: String,
    pub waiting: u64,
    pub longest_wait_s: u64,
}

/// Sessions requested today (since midnight UTC).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Today {
    pub requested: u64,
    pub accepted: u64,
    pub ended: u64,
    pub cancelled: u64,
    pub surveys: u64,
    pub survey_average: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SystemInfo {
    pub appliance_id: String,
    pub version: String,
    pub sealed: bool,
    pub unseal_mode: String,
    pub kek_epoch: u64,
    pub audit_entries: u64,
    pub checkpoint_size: Option<u64>,
    pub checkpoint_at: String,
    /// The checkpoint key's name and hash (`custos-…+1a2b3c4d`).
    pub checkpoint_key: String,
    pub fingerprint: String,
    pub holds_active: u64,
    pub archive_objects: u64,
    pub archive_bytes: u64,
    pub database_bytes: u64,
    /// The data disk: (total, free) bytes.
    pub disk: Option<(u64, u64)>,
    pub today: Today,
    /// What runs in the background: (name, state, a line on it).
    pub services: Vec<(String, String, String)>,
}

/// An alert raised by the appliance (from the audit log).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Alert {
    pub time: String,
    pub summary: String,
}

/// An export bundle being built by the appliance for this console.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportProgress {
    pub id: u64,
    /// `running`, `written` (saved to `path`) or `failed`.
    pub state: String,
    pub done: u64,
    pub total: u64,
    pub path: String,
    /// When finished: what happened, in a line.
    pub message: String,
}

/// What retention will remove, per policy: due now and within 30, 90 and 365 days, and how much
/// holds keep.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanLine {
    pub policy: String,
    pub due: [u64; 4],
    pub held: u64,
    pub total: u64,
}

/// An installed retention policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyLine {
    pub name: String,
    /// What it selects: classes, portals, skills, fields.
    pub selects: String,
    pub retain_days: u64,
    pub action: String,
    pub mode: String,
}

/// The audit verification the appliance runs for the console.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verification {
    pub id: u64,
    /// `running`, `intact`, `broken` or `failed`.
    pub state: String,
    pub checked: u64,
    pub total: u64,
    /// When done: the result, in a line.
    pub summary: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct UserLine {
    pub name: String,
    pub role: String,
    pub disabled: bool,
    pub created_at: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenLine {
    pub id: String,
    pub user: String,
    pub name: String,
    pub scopes: String,
    pub expires_at: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionRow {
    pub id: String,
    pub status: String,
    pub portal: String,
    pub agent: String,
    pub external_ref: String,
    pub requested_at: String,
    pub survey: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Detail {
    pub id: String,
    /// (label, value) lines of the record.
    pub fields: Vec<(String, String)>,
    /// Transcript lines, ready to show.
    pub transcript: Vec<String>,
    /// What happened, in time order: request, joins, chat, files, diagnostics, survey, end.
    pub timeline: Vec<String>,
    /// Retention of each part: policy, when it expires, holds.
    pub retention: Vec<String>,
    /// The timeline is shown instead of the transcript.
    pub show_timeline: bool,
    /// Who read the session and when (for roles that may see it).
    pub access: Vec<String>,
    pub scroll: usize,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct HoldRow {
    pub id: i64,
    pub scope: String,
    pub value: String,
    pub case_id: String,
    pub reason: String,
    pub placed_by: String,
    pub placed_at: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditLine {
    pub seq: u64,
    pub time: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
}

/// What the console asks the appliance for; run in the background.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Login {
        name: String,
        password: String,
    },
    LoadDashboard,
    LoadSessions {
        after: Option<String>,
        query: String,
        /// For a search of transcript words by a role that must state why.
        reason: Option<String>,
    },
    LoadDetail {
        id: String,
        reason: Option<String>,
    },
    LoadHolds,
    PlaceHold {
        session: String,
        reason: String,
        case: String,
    },
    ReleaseHold {
        id: i64,
        reason: String,
    },
    LoadAudit {
        filter: String,
    },
    LoadPlan,
    /// Validates the policy files in a directory on this machine (nothing is installed).
    CheckPolicies {
        dir: String,
    },
    LoadUsers,
    LoadSystem,
    StartVerify,
    PollVerify {
        id: u64,
    },
    Seal {
        passphrase: Option<String>,
    },
    Unseal {
        passphrase: String,
    },
    RotateKeys,
    CreateUser {
        name: String,
        role: String,
    },
    DisableUser {
        name: String,
    },
    RevokeToken {
        id: String,
    },
    /// Asks how far the export is, and saves the bundle to `path` once it is ready.
    PollExport {
        id: u64,
        path: String,
    },
    /// A signed bundle of these sessions, built by the appliance in the background and written
    /// to `path` on this machine.
    Export {
        sessions: Vec<String>,
        reason: String,
        recipients: Vec<String>,
        path: String,
    },
}

/// What came back.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    LoggedIn {
        token: String,
        name: String,
        role: String,
    },
    Dashboard {
        agents: Vec<AgentRow>,
        queues: Vec<QueueRow>,
        system: Option<SystemInfo>,
        alerts: Vec<Alert>,
        /// Sessions requested on each of the last 14 days (UTC), oldest first.
        per_day: Vec<u64>,
    },
    Sessions {
        rows: Vec<SessionRow>,
        next: Option<String>,
    },
    Detail(Detail),
    Holds(Vec<HoldRow>),
    Done(String),
    Audit {
        entries: Vec<AuditLine>,
        /// The newest checkpoint's size and its key's name and hash.
        checkpoint: Option<(u64, String)>,
    },
    Plan {
        lines: Vec<PlanLine>,
        policies: Vec<PolicyLine>,
    },
    /// The check of a policy directory: whether it is valid, and what to show.
    PolicyCheck {
        valid: bool,
        lines: Vec<String>,
    },
    Users {
        users: Vec<UserLine>,
        tokens: Vec<TokenLine>,
    },
    System(SystemInfo),
    Verify(Verification),
    Export(ExportProgress),
    /// The appliance answered that it is sealed.
    Sealed(String),
    Failed {
        message: String,
        unauthorized: bool,
    },
}

/// A one-line text input.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Input {
    pub label: String,
    pub text: String,
    pub secret: bool,
}

impl Input {
    fn new(label: &str, secret: bool) -> Self {
        Self {
            label: label.into(),
            text: String::new(),
            secret,
        }
    }

    /// Edits the text; returns true if the key was an edit.
    fn edit(&mut self, k: &KeyEvent) -> bool {
        match k.code {
            KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => {
                if self.text.chars().count() < 500 {
                    self.text.push(c);
                }
                true
            }
            KeyCode::Backspace => {
                self.text.pop();
                true
            }
            _ => false,
        }
    }
}

/// A form of a few inputs, one focused.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Form {
    pub title: String,
    pub inputs: Vec<Input>,
    pub focus: usize,
}

/// What a form is for.
#[derive(Clone, Debug, PartialEq)]
pub enum FormKind {
    Login,
    Filter,
    Reason { id: String },
    SearchReason { query: String },
    PlaceHold,
    ReleaseHold { id: i64 },
    Export { sessions: Vec<String> },
    AuditFilter,
    CheckPolicies,
    NewUser,
    DisableUser { name: String },
    RevokeToken { id: String },
    Seal,
    Unseal,
    Rotate,
}

#[derive(Debug, Default)]
pub struct Console {
    pub screen: Option<Screen>,
    pub user: Option<(String, String)>,
    pub token: Option<String>,
    pub agents: Vec<AgentRow>,
    pub queues: Vec<QueueRow>,
    pub alerts: Vec<Alert>,
    /// Sessions requested on each of the last 14 days, oldest first (the dashboard's chart).
    pub per_day: Vec<u64>,
    pub system: Option<SystemInfo>,
    pub sessions: Vec<SessionRow>,
    pub session_sel: usize,
    pub query: String,
    /// Cursors of the pages before this one (for going back) and of the next page.
    pub pages: Vec<Option<String>>,
    pub next_page: Option<String>,
    pub detail: Option<Detail>,
    pub holds: Vec<HoldRow>,
    pub hold_sel: usize,
    pub audit: Vec<AuditLine>,
    pub audit_sel: usize,
    pub audit_filter: String,
    pub audit_checkpoint: Option<(u64, String)>,
    pub plan: Vec<PlanLine>,
    pub policies: Vec<PolicyLine>,
    /// The last policy check: (valid, lines), shown until Esc.
    pub policy_check: Option<(bool, Vec<String>)>,
    pub users: Vec<UserLine>,
    pub tokens: Vec<TokenLine>,
    /// The selected row of the users screen: users first, then tokens.
    pub users_sel: usize,
    pub verify: Option<Verification>,
    pub export: Option<ExportProgress>,
    /// Why this officer searches transcripts (asked once, sent with each search).
    pub search_reason: Option<String>,
    pub form: Option<(FormKind, Form)>,
    pub help: bool,
    /// Requests in flight, and the spinner frame.
    pub busy: usize,
    pub spin: usize,
    pub status: Option<(String, bool)>,
    pub quit: bool,
    ticks: u64,
}

fn form(title: &str, kind: FormKind, inputs: &[(&str, bool)]) -> Option<(FormKind, Form)> {
    Some((
        kind,
        Form {
            title: title.into(),
            inputs: inputs.iter().map(|(l, s)| Input::new(l, *s)).collect(),
            focus: 0,
        },
    ))
}

impl Console {
    /// A console at its login form.
    pub fn new() -> Self {
        Console {
            form: form(
                "Sign in to Custos",
                FormKind::Login,
                &[("Name", false), ("Password", true)],
            ),
            ..Default::default()
        }
    }

    fn issue(&mut self, c: Command) -> Vec<Command> {
        self.busy += 1;
        vec![c]
    }

    /// What a role needs to give before reading content.
    fn needs_reason(&self) -> bool {
        self.user
            .as_ref()
            .is_some_and(|(_, r)| r == "compliance" || r == "auditor")
    }

    fn load(&mut self, s: Screen) -> Vec<Command> {
        match s {
            Screen::Dashboard => self.issue(Command::LoadDashboard),
            Screen::Sessions => {
                let q = self.query.clone();
                let reason = self.search_reason.clone();
                self.issue(Command::LoadSessions {
                    after: self.pages.last().cloned().flatten(),
                    query: q,
                    reason,
                })
            }
            Screen::Holds => self.issue(Command::LoadHolds),
            Screen::Audit => {
                let filter = self.audit_filter.clone();
                self.issue(Command::LoadAudit { filter })
            }
            Screen::Policies => self.issue(Command::LoadPlan),
            Screen::Users => self.issue(Command::LoadUsers),
            Screen::System => self.issue(Command::LoadSystem),
        }
    }

    fn go(&mut self, s: Screen) -> Vec<Command> {
        self.screen = Some(s);
        self.detail = None;
        self.load(s)
    }

    /// Handles one key press.
    pub fn on_key(&mut self, k: KeyEvent) -> Vec<Command> {
        if k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL) {
            self.quit = true;
            return vec![];
        }
        if self.form.is_some() {
            return self.on_form_key(k);
        }
        if self.help {
            self.help = false;
            return vec![];
        }
        let Some(screen) = self.screen else {
            return vec![];
        };
        match k.code {
            KeyCode::Char('?') => {
                self.help = true;
                return vec![];
            }
            KeyCode::Char('q') => {
                self.quit = true;
                return vec![];
            }
            KeyCode::Tab | KeyCode::BackTab => {
                let i = SCREENS.iter().position(|s| *s == screen).unwrap_or(0);
                let n = SCREENS.len();
                let next = if k.code == KeyCode::Tab {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                };
                return self.go(SCREENS[next]);
            }
            KeyCode::Char(c @ '1'..='7') => return self.go(SCREENS[c as usize - '1' as usize]),
            KeyCode::Char('r') => return self.load(screen),
            _ => {}
        }
        if let Some(d) = self.detail.as_mut() {
            let len = if d.show_timeline {
                d.timeline.len()
            } else {
                d.transcript.len()
            };
            let last = len.saturating_sub(1);
            match k.code {
                KeyCode::Esc | KeyCode::Left => self.detail = None,
                KeyCode::Char('t') => {
                    d.show_timeline = !d.show_timeline;
                    d.scroll = 0;
                }
                KeyCode::Down => d.scroll = (d.scroll + 1).min(last),
                KeyCode::Up => d.scroll = d.scroll.saturating_sub(1),
                KeyCode::PageDown => d.scroll = (d.scroll + 10).min(last),
                KeyCode::PageUp => d.scroll = d.scroll.saturating_sub(10),
                _ => {}
            }
            return vec![];
        }
        let move_sel = |sel: &mut usize, len: usize, code: KeyCode| match code {
            KeyCode::Down => *sel = (*sel + 1).min(len.saturating_sub(1)),
            KeyCode::Up => *sel = sel.saturating_sub(1),
            KeyCode::Home => *sel = 0,
            KeyCode::End => *sel = len.saturating_sub(1),
            _ => {}
        };
        match screen {
            Screen::Dashboard => vec![],
            Screen::Users => {
                let n = self.users.len();
                match k.code {
                    KeyCode::Char('n') => {
                        self.form = form(
                            "New user: a one-time password is shown once, changed at first sign-in",
                            FormKind::NewUser,
                            &[
                                ("Name", false),
                                ("Role (admin, agent, compliance, auditor)", false),
                            ],
                        );
                    }
                    KeyCode::Char('d') => {
                        if let Some(u) = self.users.get(self.users_sel).filter(|u| !u.disabled) {
                            let name = u.name.clone();
                            self.form = form(
                                &format!("Disable {name}: their sign-ins and tokens stop working"),
                                FormKind::DisableUser { name },
                                &[("Type the name to confirm", false)],
                            );
                        }
                    }
                    KeyCode::Char('x') => {
                        if let Some(t) = self
                            .users_sel
                            .checked_sub(n)
                            .and_then(|i| self.tokens.get(i))
                        {
                            let id = t.id.clone();
                            self.form = form(
                                &format!("Revoke token {id} ({})", t.name),
                                FormKind::RevokeToken { id },
                                &[("Type yes to revoke", false)],
                            );
                        }
                    }
                    code => move_sel(&mut self.users_sel, n + self.tokens.len(), code),
                }
                vec![]
            }
            Screen::Policies => match k.code {
                KeyCode::Char('c') => {
                    self.form = form(
                        "Check policy files before installing them (custos policy install)",
                        FormKind::CheckPolicies,
                        &[("Directory", false)],
                    );
                    if let Some((_, f)) = self.form.as_mut() {
                        f.inputs[0].text = "policies".into();
                    }
                    vec![]
                }
                KeyCode::Esc => {
                    self.policy_check = None;
                    vec![]
                }
                _ => vec![],
            },
            Screen::System => {
                let (title, kind, input) = match k.code {
                    KeyCode::Char('s') => (
                        "Seal the appliance: live sessions stop, nothing is served until unsealed",
                        FormKind::Seal,
                        "Passphrase (only if the key is kept in a key file)",
                    ),
                    KeyCode::Char('u') => ("Unseal the appliance", FormKind::Unseal, "Passphrase"),
                    KeyCode::Char('k') => (
                        "Rotate the key-encryption keys (every data key is re-wrapped)",
                        FormKind::Rotate,
                        "Type yes to rotate",
                    ),
                    _ => return vec![],
                };
                let secret = kind != FormKind::Rotate;
                self.form = form(title, kind, &[(input, secret)]);
                vec![]
            }
            Screen::Sessions => match k.code {
                KeyCode::Char('/') => {
                    self.form = form(
                        "Search: words in transcripts, ref:, portal:, agent:, customer:, since:, until:",
                        FormKind::Filter,
                        &[("Search", false)],
                    );
                    if let Some((_, f)) = self.form.as_mut() {
                        f.inputs[0].text = self.query.clone();
                    }
                    vec![]
                }
                KeyCode::Char('e') if !self.sessions.is_empty() && self.export.is_none() => {
                    let sessions: Vec<String> =
                        self.sessions.iter().map(|s| s.id.clone()).collect();
                    let title = format!(
                        "Export the {} sessions listed as a signed bundle",
                        sessions.len()
                    );
                    self.form = form(
                        &title,
                        FormKind::Export { sessions },
                        &[
                            ("Reason", false),
                            ("Auditors' age keys (optional)", false),
                            ("Save as", false),
                        ],
                    );
                    if let Some((_, f)) = self.form.as_mut() {
                        f.inputs[2].text = "custos-export.tar".into();
                    }
                    vec![]
                }
                KeyCode::Enter => match self.sessions.get(self.session_sel).map(|s| s.id.clone()) {
                    Some(id) if self.needs_reason() => {
                        self.form = form(
                            "Why do you read this session? (audited)",
                            FormKind::Reason { id },
                            &[("Reason", false)],
                        );
                        vec![]
                    }
                    Some(id) => self.issue(Command::LoadDetail { id, reason: None }),
                    None => vec![],
                },
                KeyCode::PageDown | KeyCode::Right => match self.next_page.clone() {
                    Some(c) if !self.sessions.is_empty() => {
                        self.pages.push(Some(c));
                        self.load(Screen::Sessions)
                    }
                    _ => vec![],
                },
                KeyCode::PageUp | KeyCode::Left => {
                    if self.pages.pop().is_some() {
                        self.load(Screen::Sessions)
                    } else {
                        vec![]
                    }
                }
                code => {
                    move_sel(&mut self.session_sel, self.sessions.len(), code);
                    vec![]
                }
            },
            Screen::Holds => match k.code {
                KeyCode::Char('n') => {
                    self.form = form(
                        "Place a legal hold on a session",
                        FormKind::PlaceHold,
                        &[("Session id", false), ("Reason", false), ("Case", false)],
                    );
                    vec![]
                }
                KeyCode::Char('x') => {
                    if let Some(h) = self.holds.get(self.hold_sel) {
                        let id = h.id;
                        self.form = form(
                            &format!("Release hold {id} (needs a second officer's approval)"),
                            FormKind::ReleaseHold { id },
                            &[("Reason", false)],
                        );
                    }
                    vec![]
                }
                code => {
                    move_sel(&mut self.hold_sel, self.holds.len(), code);
                    vec![]
                }
            },
            Screen::Audit => match k.code {
                KeyCode::Char('/') => {
                    self.form = form(
                        "Filter the audit log: actor:, action: (a prefix), target:",
                        FormKind::AuditFilter,
                        &[("Filter", false)],
                    );
                    if let Some((_, f)) = self.form.as_mut() {
                        f.inputs[0].text = self.audit_filter.clone();
                    }
                    vec![]
                }
                KeyCode::Char('v') if self.verify.as_ref().is_none_or(|v| v.state != "running") => {
                    self.issue(Command::StartVerify)
                }
                code => {
                    move_sel(&mut self.audit_sel, self.audit.len(), code);
                    vec![]
                }
            },
        }
    }

    fn on_form_key(&mut self, k: KeyEvent) -> Vec<Command> {
        let (kind, f) = self.form.as_mut().expect("a form is open");
        match k.code {
            KeyCode::Esc if *kind != FormKind::Login => {
                self.form = if self.user.is_none() {
                    Console::new().form
                } else {
                    None
                };
                vec![]
            }
            KeyCode::Tab | KeyCode::Down => {
                f.focus = (f.focus + 1) % f.inputs.len();
                vec![]
            }
            KeyCode::BackTab | KeyCode::Up => {
                f.focus = (f.focus + f.inputs.len() - 1) % f.inputs.len();
                vec![]
            }
            KeyCode::Enter => {
                if f.focus + 1 < f.inputs.len() {
                    f.focus += 1;
                    return vec![];
                }
                let values: Vec<String> =
                    f.inputs.iter().map(|i| i.text.trim().to_string()).collect();
                let optional = |i: usize| {
                    matches!(
                        kind,
                        FormKind::Filter | FormKind::AuditFilter | FormKind::Seal
                    ) || (matches!(kind, FormKind::Export { .. }) && i == 1)
                };
                if let Some(i) = values
                    .iter()
                    .enumerate()
                    .position(|(i, v)| v.is_empty() && !optional(i))
                {
                    let label = f.inputs[i].label.clone();
                    f.focus = i;
                    self.status = Some((format!("{label} is required"), true));
                    return vec![];
                }
                let (kind, _) = self.form.take().expect("a form is open");
                self.status = None;
                let cmd = match kind {
                    FormKind::Login => Command::Login {
                        name: values[0].clone(),
                        password: values[1].clone(),
                    },
                    FormKind::Filter => {
                        let query = values[0].clone();
                        let has_words = search_params(&query).is_ok_and(|(_, w)| !w.is_empty());
                        if has_words && self.needs_reason() && self.search_reason.is_none() {
                            self.form = form(
                                "Why do you search transcripts? (audited)",
                                FormKind::SearchReason { query },
                                &[("Reason", false)],
                            );
                            return vec![];
                        }
                        self.query = query;
                        self.pages.clear();
                        self.session_sel = 0;
                        return self.load(Screen::Sessions);
                    }
                    FormKind::SearchReason { query } => {
                        self.search_reason = Some(values[0].clone());
                        self.query = query;
                        self.pages.clear();
                        self.session_sel = 0;
                        return self.load(Screen::Sessions);
                    }
                    FormKind::Reason { id } => Command::LoadDetail {
                        id,
                        reason: Some(values[0].clone()),
                    },
                    FormKind::PlaceHold => Command::PlaceHold {
                        session: values[0].clone(),
                        reason: values[1].clone(),
                        case: values[2].clone(),
                    },
                    FormKind::Export { sessions } => Command::Export {
                        sessions,
                        reason: values[0].clone(),
                        recipients: values[1].split_whitespace().map(String::from).collect(),
                        path: values[2].clone(),
                    },
                    FormKind::ReleaseHold { id } => Command::ReleaseHold {
                        id,
                        reason: values[0].clone(),
                    },
                    FormKind::AuditFilter => {
                        if let Err(e) = audit_params(&values[0]) {
                            self.status = Some((e, true));
                            return vec![];
                        }
                        self.audit_filter = values[0].clone();
                        // Past the end: the filtered tail opens at its newest entry.
                        self.audit_sel = self.audit.len();
                        return self.load(Screen::Audit);
                    }
                    FormKind::NewUser => Command::CreateUser {
                        name: values[0].clone(),
                        role: values[1].to_lowercase(),
                    },
                    FormKind::DisableUser { name } if values[0] == name => {
                        Command::DisableUser { name }
                    }
                    FormKind::RevokeToken { id } if values[0].eq_ignore_ascii_case("yes") => {
                        Command::RevokeToken { id }
                    }
                    FormKind::DisableUser { .. } | FormKind::RevokeToken { .. } => {
                        self.status = Some(("not confirmed; nothing changed".into(), false));
                        return vec![];
                    }
                    FormKind::CheckPolicies => Command::CheckPolicies {
                        dir: values[0].clone(),
                    },
                    FormKind::Seal => Command::Seal {
                        passphrase: Some(values[0].clone()).filter(|p| !p.is_empty()),
                    },
                    FormKind::Unseal => Command::Unseal {
                        passphrase: values[0].clone(),
                    },
                    FormKind::Rotate if values[0].eq_ignore_ascii_case("yes") => {
                        Command::RotateKeys
                    }
                    FormKind::Rotate => {
                        self.status = Some(("keys not rotated".into(), false));
                        return vec![];
                    }
                };
                self.issue(cmd)
            }
            _ => {
                let input = &mut f.inputs[f.focus];
                input.edit(&k);
                vec![]
            }
        }
    }

    /// A result from the background.
    pub fn on_outcome(&mut self, o: Outcome) -> Vec<Command> {
        self.busy = self.busy.saturating_sub(1);
        match o {
            Outcome::LoggedIn { token, name, role } => {
                self.form = None;
                self.token = Some(token);
                self.user = Some((name, role));
                return self.go(Screen::Dashboard);
            }
            Outcome::Dashboard {
                agents,
                queues,
                system,
                alerts,
                per_day,
            } => {
                self.agents = agents;
                self.queues = queues;
                self.system = system;
                self.alerts = alerts;
                self.per_day = per_day;
            }
            Outcome::Sessions { rows, next } => {
                self.session_sel = self.session_sel.min(rows.len().saturating_sub(1));
                self.sessions = rows;
                self.next_page = next;
            }
            Outcome::Detail(d) => self.detail = Some(d),
            Outcome::Holds(h) => {
                self.hold_sel = self.hold_sel.min(h.len().saturating_sub(1));
                self.holds = h;
            }
            Outcome::Done(message) => {
                self.status = Some((message, false));
                if self.user.is_none() {
                    self.form = Console::new().form;
                }
                if let Some(s @ (Screen::Holds | Screen::System | Screen::Users)) = self.screen {
                    return self.load(s);
                }
            }
            Outcome::Audit {
                entries,
                checkpoint,
            } => {
                let at_end = self.audit_sel.saturating_add(1) >= self.audit.len();
                self.audit = entries;
                self.audit_checkpoint = checkpoint;
                if at_end {
                    self.audit_sel = self.audit.len().saturating_sub(1);
                }
            }
            Outcome::Plan { lines, policies } => {
                self.plan = lines;
                self.policies = policies;
            }
            Outcome::PolicyCheck { valid, lines } => self.policy_check = Some((valid, lines)),
            Outcome::Users { users, tokens } => {
                self.users_sel = self
                    .users_sel
                    .min((users.len() + tokens.len()).saturating_sub(1));
                self.users = users;
                self.tokens = tokens;
            }
            Outcome::System(sys) => self.system = Some(sys),
            Outcome::Verify(v) => self.verify = Some(v),
            Outcome::Export(e) if e.state == "running" => self.export = Some(e),
            Outcome::Export(e) => {
                self.status = Some((e.message, e.state != "written"));
                self.export = None;
            }
            Outcome::Sealed(message) => {
                if let Some(s) = self.system.as_mut() {
                    s.sealed = true;
                }
                // Nobody can sign in to a sealed appliance: the console offers to unseal it
                // (answered only on the appliance's own socket).
                if self.user.is_none() {
                    self.form = form(
                        "The appliance is sealed: unseal it to sign in",
                        FormKind::Unseal,
                        &[("Passphrase", true)],
                    );
                }
                self.status = Some((message, true));
            }
            Outcome::Failed {
                message,
                unauthorized,
            } => {
                if unauthorized {
                    *self = Console::new();
                } else if self.user.is_none() && self.form.is_none() {
                    // A refused unseal before signing in: back to the sign-in form.
                    self.form = Console::new().form;
                }
                self.status = Some((message, true));
            }
        }
        vec![]
    }

    /// Called every 100 ms: the spinner turns, and the live screens refresh every 2 s.
    pub fn on_tick(&mut self) -> Vec<Command> {
        self.ticks += 1;
        if self.busy > 0 {
            self.spin = self.spin.wrapping_add(1);
        }
        if let Some(v) = &self.verify
            && v.state == "running"
            && self.busy == 0
            && self.ticks.is_multiple_of(2)
        {
            let id = v.id;
            return self.issue(Command::PollVerify { id });
        }
        if let Some(e) = &self.export
            && self.busy == 0
            && self.ticks.is_multiple_of(3)
        {
            let (id, path) = (e.id, e.path.clone());
            return self.issue(Command::PollExport { id, path });
        }
        let live = matches!(self.screen, Some(Screen::Dashboard) | Some(Screen::Audit));
        if live && self.busy == 0 && self.form.is_none() && self.ticks.is_multiple_of(20) {
            return self.load(self.screen.expect("live"));
        }
        vec![]
    }
}

/// Parses the audit filter: `actor:NAME action:PREFIX target:TARGET`; a plain word is an action
/// prefix.
pub fn audit_params(query: &str) -> Result<Filters, String> {
    let mut filters = Vec::new();
    for word in query.split_whitespace() {
        let (key, v) = match word.split_once(':') {
            Some(("actor", v)) => ("actor", v),
            Some(("action", v)) => ("action", v),
            Some(("target", v)) => ("target", v),
            Some((k, _)) if !k.contains('.') => {
                return Err(format!(
                    "{k:?} is not an audit filter; use actor:, action: or target:"
                ));
            }
            _ => ("action", word),
        };
        if v.is_empty() {
            return Err(format!("{key}: needs a value"));
        }
        if filters.iter().any(|(k, _)| *k == key) {
            return Err(format!("{key}: is given twice"));
        }
        filters.push((key, v.to_string()));
    }
    Ok(filters)
}

/// Query filters as (parameter, value).
pub type Filters = Vec<(&'static str, String)>;

/// Parses the sessions search: filters `ref:X portal:Y agent:Z customer:EMAIL-OR-NAME since:DATE
/// until:DATE` and plain words, which are searched for in transcripts; or says what it does not
/// understand.
pub fn search_params(query: &str) -> Result<(Filters, Vec<String>), String> {
    let mut filters = Vec::new();
    let mut words = Vec::new();
    for word in query.split_whitespace() {
        let Some((k, v)) = word.split_once(':') else {
            words.push(word.to_string());
            continue;
        };
        let key = match k {
            "ref" => "ref",
            "portal" => "portal",
            "agent" => "agent",
            "customer" => "customer",
            "since" => "since",
            "until" => "until",
            other => {
                return Err(format!(
                    "{other:?} is not a filter; use ref:, portal:, agent:, customer:, since:, until: or plain words"
                ));
            }
        };
        if v.is_empty() {
            return Err(format!("{key}: needs a value"));
        }
        filters.push((key, v.to_string()));
    }
    Ok((filters, words))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn type_text(c: &mut Console, s: &str) {
        for ch in s.chars() {
            c.on_key(key(KeyCode::Char(ch)));
        }
    }

    fn logged_in(role: &str) -> Console {
        let mut c = Console::new();
        let cmds = c.on_outcome(Outcome::LoggedIn {
            token: "t".into(),
            name: "ann".into(),
            role: role.into(),
        });
        assert_eq!(cmds, [Command::LoadDashboard]);
        c.on_outcome(Outcome::Dashboard {
            agents: vec![],
            queues: vec![],
            system: None,
            alerts: vec![],
            per_day: vec![],
        });
        c
    }

    #[test]
    fn login_needs_both_fields_then_asks_the_appliance() {
        let mut c = Console::new();
        assert!(
            c.on_key(key(KeyCode::Enter)).is_empty(),
            "Enter moves to the password"
        );
        assert!(c.on_key(key(KeyCode::Enter)).is_empty());
        assert_eq!(c.status.as_ref().unwrap().0, "Name is required");
        type_text(&mut c, "ann");
        c.on_key(key(KeyCode::Tab));
        type_text(&mut c, "pw 123");
        c.on_key(key(KeyCode::Backspace));
        assert_eq!(
            c.on_key(key(KeyCode::Enter)),
            [Command::Login {
                name: "ann".into(),
                password: "pw 12".into()
            }]
        );
        assert_eq!(c.busy, 1);
        // Esc does not leave the login form; a refused login keeps it open with the message.
        c.on_outcome(Outcome::Failed {
            message: "unknown user or wrong password".into(),
            unauthorized: true,
        });
        assert!(matches!(c.form, Some((FormKind::Login, _))));
        assert!(c.on_key(key(KeyCode::Esc)).is_empty());
        assert!(c.form.is_some());
    }

    #[test]
    fn tabs_cycle_and_each_screen_loads() {
        let mut c = logged_in("admin");
        assert_eq!(
            c.on_key(key(KeyCode::Tab)),
            [Command::LoadSessions {
                after: None,
                query: String::new(),
                reason: None
            }]
        );
        assert_eq!(c.on_key(key(KeyCode::Tab)), [Command::LoadPlan]);
        assert_eq!(c.on_key(key(KeyCode::Tab)), [Command::LoadHolds]);
        assert_eq!(
            c.on_key(key(KeyCode::Tab)),
            [Command::LoadAudit {
                filter: String::new()
            }]
        );
        assert_eq!(c.on_key(key(KeyCode::Tab)), [Command::LoadUsers]);
        assert_eq!(c.on_key(key(KeyCode::Tab)), [Command::LoadSystem]);
        assert_eq!(c.on_key(key(KeyCode::Tab)), [Command::LoadDashboard]);
        assert_eq!(c.on_key(key(KeyCode::BackTab)), [Command::LoadSystem]);
        assert_eq!(
            c.on_key(key(KeyCode::Char('2'))),
            [Command::LoadSessions {
                after: None,
                query: String::new(),
                reason: None
            }]
        );
        c.on_key(key(KeyCode::Char('?')));
        assert!(c.help);
        assert!(c.on_key(key(KeyCode::Char('x'))).is_empty());
        assert!(!c.help, "any key closes the help");
    }

    #[test]
    fn sessions_search_page_and_open_with_a_reason_for_compliance() {
        let mut c = logged_in("compliance");
        c.on_key(key(KeyCode::Char('2')));
        let rows: Vec<SessionRow> = (0..3)
            .map(|i| SessionRow {
                id: format!("sess_{i}"),
                ..Default::default()
            })
            .collect();
        c.on_outcome(Outcome::Sessions {
            rows,
            next: Some("CUR1".into()),
        });
        c.on_key(key(KeyCode::Char('/')));
        type_text(&mut c, "ref:T-1");
        assert_eq!(
            c.on_key(key(KeyCode::Enter)),
            [Command::LoadSessions {
                after: None,
                query: "ref:T-1".into(),
                reason: None
            }]
        );
        c.on_outcome(Outcome::Sessions {
            rows: vec![SessionRow {
                id: "sess_a".into(),
                ..Default::default()
            }],
            next: Some("CUR2".into()),
        });
        assert_eq!(
            c.on_key(key(KeyCode::PageDown)),
            [Command::LoadSessions {
                after: Some("CUR2".into()),
                query: "ref:T-1".into(),
                reason: None
            }]
        );
        c.on_outcome(Outcome::Sessions {
            rows: vec![SessionRow {
                id: "sess_b".into(),
                ..Default::default()
            }],
            next: None,
        });
        assert!(
            c.on_key(key(KeyCode::PageDown)).is_empty(),
            "no page after the last"
        );
        assert_eq!(
            c.on_key(key(KeyCode::PageUp)),
            [Command::LoadSessions {
                after: None,
                query: "ref:T-1".into(),
                reason: None
            }]
        );
        c.on_outcome(Outcome::Sessions {
            rows: vec![SessionRow {
                id: "sess_a".into(),
                ..Default::default()
            }],
            next: None,
        });
        // Compliance states a reason before the content is read.
        assert!(c.on_key(key(KeyCode::Enter)).is_empty());
        assert!(matches!(c.form, Some((FormKind::Reason { .. }, _))));
        type_text(&mut c, "case 7");
        assert_eq!(
            c.on_key(key(KeyCode::Enter)),
            [Command::LoadDetail {
                id: "sess_a".into(),
                reason: Some("case 7".into())
            }]
        );
        let d = Detail {
            id: "sess_a".into(),
            transcript: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        c.on_outcome(Outcome::Detail(d));
        c.on_key(key(KeyCode::Down));
        c.on_key(key(KeyCode::Down));
        assert_eq!(c.detail.as_ref().unwrap().scroll, 1);
        c.on_key(key(KeyCode::Esc));
        assert!(c.detail.is_none());
    }

    #[test]
    fn holds_are_placed_and_released_through_forms() {
        let mut c = logged_in("compliance");
        c.on_key(key(KeyCode::Char('4')));
        c.on_outcome(Outcome::Holds(vec![HoldRow {
            id: 4,
            ..Default::default()
        }]));
        c.on_key(key(KeyCode::Char('n')));
        type_text(&mut c, "sess_x");
        c.on_key(key(KeyCode::Enter));
        type_text(&mut c, "litigation");
        c.on_key(key(KeyCode::Enter));
        assert!(
            c.on_key(key(KeyCode::Enter)).is_empty(),
            "the case is required"
        );
        type_text(&mut c, "C-1");
        assert_eq!(
            c.on_key(key(KeyCode::Enter)),
            [Command::PlaceHold {
                session: "sess_x".into(),
                reason: "litigation".into(),
                case: "C-1".into()
            }]
        );
        assert_eq!(
            c.on_outcome(Outcome::Done("hold 5 placed".into())),
            [Command::LoadHolds]
        );
        c.on_key(key(KeyCode::Char('x')));
        type_text(&mut c, "settled");
        assert_eq!(
            c.on_key(key(KeyCode::Enter)),
            [Command::ReleaseHold {
                id: 4,
                reason: "settled".into()
            }]
        );
        c.on_key(key(KeyCode::Char('n')));
        assert!(c.on_key(key(KeyCode::Esc)).is_empty());
        assert!(c.form.is_none(), "Esc closes a form");
    }

    #[test]
    fn live_screens_refresh_and_an_expired_login_returns_to_the_form() {
        let mut c = logged_in("admin");
        let cmds: Vec<Command> = (0..20).flat_map(|_| c.on_tick()).collect();
        assert_eq!(cmds, [Command::LoadDashboard]);
        c.on_outcome(Outcome::Failed {
            message: "log in first".into(),
            unauthorized: true,
        });
        assert!(c.token.is_none() && matches!(c.form, Some((FormKind::Login, _))));
    }

    #[test]
    fn verification_starts_once_and_is_polled_until_done() {
        let mut c = logged_in("auditor");
        c.on_key(key(KeyCode::Char('5')));
        c.on_outcome(Outcome::Audit {
            entries: vec![],
            checkpoint: None,
        });
        assert_eq!(c.on_key(key(KeyCode::Char('v'))), [Command::StartVerify]);
        let running = Verification {
            id: 3,
            state: "running".into(),
            ..Default::default()
        };
        c.on_outcome(Outcome::Verify(running.clone()));
        assert!(
            c.on_key(key(KeyCode::Char('v'))).is_empty(),
            "not twice at once"
        );
        let polls: Vec<Command> = (0..4)
            .flat_map(|_| {
                let cmds = c.on_tick();
                if !cmds.is_empty() {
                    c.on_outcome(Outcome::Verify(running.clone()));
                }
                cmds
            })
            .collect();
        assert_eq!(
            polls,
            [Command::PollVerify { id: 3 }, Command::PollVerify { id: 3 }]
        );
        c.on_outcome(Outcome::Verify(Verification {
            id: 3,
            state: "intact".into(),
            ..Default::default()
        }));
        assert!(
            (0..10)
                .flat_map(|_| c.on_tick())
                .all(|cmd| cmd != Command::PollVerify { id: 3 })
        );
    }

    #[test]
    fn the_audit_log_is_filtered_through_a_form() {
        let mut c = logged_in("auditor");
        c.on_key(key(KeyCode::Char('5')));
        c.on_outcome(Outcome::Audit {
            entries: vec![],
            checkpoint: Some((9, "custos+ab12cd34".into())),
        });
        c.on_key(key(KeyCode::Char('/')));
        type_text(&mut c, "colour:red");
        assert!(c.on_key(key(KeyCode::Enter)).is_empty());
        assert!(c.status.as_ref().unwrap().0.contains("not an audit filter"));
        assert_eq!(c.audit_filter, "", "a refused filter changes nothing");
        c.on_key(key(KeyCode::Char('/')));
        type_text(&mut c, "hold. actor:ann");
        assert_eq!(
            c.on_key(key(KeyCode::Enter)),
            [Command::LoadAudit {
                filter: "hold. actor:ann".into()
            }]
        );
        assert_eq!(
            audit_params("hold. actor:ann target:session:s_1").unwrap(),
            vec![
                ("action", "hold.".to_string()),
                ("actor", "ann".to_string()),
                ("target", "session:s_1".to_string())
            ]
        );
        assert!(audit_params("a. b.").unwrap_err().contains("twice"));
    }

    #[test]
    fn keys_are_sealed_unsealed_and_rotated_from_the_system_screen() {
        let mut c = logged_in("admin");
        c.on_key(key(KeyCode::Char('7')));
        c.on_key(key(KeyCode::Char('k')));
        type_text(&mut c, "no");
        assert!(c.on_key(key(KeyCode::Enter)).is_empty(), "only yes rotates");
        c.on_key(key(KeyCode::Char('k')));
        type_text(&mut c, "yes");
        assert_eq!(c.on_key(key(KeyCode::Enter)), [Command::RotateKeys]);
        assert_eq!(
            c.on_outcome(Outcome::Done("key epoch 2 is current".into())),
            [Command::LoadSystem],
            "the system screen shows the new epoch"
        );
        c.on_key(key(KeyCode::Char('s')));
        assert_eq!(
            c.on_key(key(KeyCode::Enter)),
            [Command::Seal { passphrase: None }],
            "a passphrase-mode appliance seals without one"
        );
        c.on_outcome(Outcome::Done("sealed".into()));
        c.on_key(key(KeyCode::Char('u')));
        assert!(c.on_key(key(KeyCode::Enter)).is_empty(), "unseal needs it");
        type_text(&mut c, "correct horse");
        assert_eq!(
            c.on_key(key(KeyCode::Enter)),
            [Command::Unseal {
                passphrase: "correct horse".into()
            }]
        );
    }

    #[test]
    fn policy_files_are_checked_from_the_policies_screen() {
        let mut c = logged_in("compliance");
        assert_eq!(c.on_key(key(KeyCode::Char('3'))), [Command::LoadPlan]);
        c.on_key(key(KeyCode::Char('c')));
        for _ in 0.."policies".len() {
            c.on_key(key(KeyCode::Backspace));
        }
        type_text(&mut c, "/etc/custos/policies");
        assert_eq!(
            c.on_key(key(KeyCode::Enter)),
            [Command::CheckPolicies {
                dir: "/etc/custos/policies".into()
            }]
        );
        c.on_outcome(Outcome::PolicyCheck {
            valid: false,
            lines: vec!["a.toml:3: retain_days must be at least 1".into()],
        });
        assert!(c.policy_check.is_some());
        c.on_key(key(KeyCode::Esc));
        assert!(c.policy_check.is_none(), "Esc puts the check away");
    }

    #[test]
    fn users_are_created_and_disabled_and_tokens_revoked_with_confirmation() {
        let mut c = logged_in("admin");
        c.on_key(key(KeyCode::Char('6')));
        c.on_outcome(Outcome::Users {
            users: vec![
                UserLine {
                    name: "ann".into(),
                    ..Default::default()
                },
                UserLine {
                    name: "bob".into(),
                    ..Default::default()
                },
            ],
            tokens: vec![TokenLine {
                id: "t1".into(),
                ..Default::default()
            }],
        });
        c.on_key(key(KeyCode::Char('n')));
        type_text(&mut c, "carl");
        c.on_key(key(KeyCode::Enter));
        type_text(&mut c, "Agent");
        assert_eq!(
            c.on_key(key(KeyCode::Enter)),
            [Command::CreateUser {
                name: "carl".into(),
                role: "agent".into()
            }]
        );
        assert_eq!(
            c.on_outcome(Outcome::Done("user carl created".into())),
            [Command::LoadUsers]
        );
        c.on_key(key(KeyCode::Down));
        c.on_key(key(KeyCode::Char('x')));
        assert!(c.form.is_none(), "x revokes tokens, not users");
        c.on_key(key(KeyCode::Char('d')));
        type_text(&mut c, "bobby");
        assert!(
            c.on_key(key(KeyCode::Enter)).is_empty(),
            "the name must match"
        );
        c.on_key(key(KeyCode::Char('d')));
        type_text(&mut c, "bob");
        assert_eq!(
            c.on_key(key(KeyCode::Enter)),
            [Command::DisableUser { name: "bob".into() }]
        );
        c.on_key(key(KeyCode::End));
        c.on_key(key(KeyCode::Char('x')));
        type_text(&mut c, "yes");
        assert_eq!(
            c.on_key(key(KeyCode::Enter)),
            [Command::RevokeToken { id: "t1".into() }]
        );
    }

    #[test]
    fn a_sealed_appliance_is_unsealed_from_the_login_form() {
        let mut c = Console::new();
        type_text(&mut c, "admin");
        c.on_key(key(KeyCode::Enter));
        type_text(&mut c, "pw");
        c.on_key(key(KeyCode::Enter));
        c.on_outcome(Outcome::Sealed("the appliance is sealed".into()));
        assert!(matches!(c.form, Some((FormKind::Unseal, _))));
        c.on_key(key(KeyCode::Esc));
        assert!(
            matches!(c.form, Some((FormKind::Login, _))),
            "Esc goes back to signing in"
        );
        c.on_outcome(Outcome::Sealed("the appliance is sealed".into()));
        type_text(&mut c, "long passphrase");
        assert_eq!(
            c.on_key(key(KeyCode::Enter)),
            [Command::Unseal {
                passphrase: "long passphrase".into()
            }]
        );
        c.on_outcome(Outcome::Done("the appliance is unsealed".into()));
        assert!(matches!(c.form, Some((FormKind::Login, _))));
        assert_eq!(c.status, Some(("the appliance is unsealed".into(), false)));
    }

    #[test]
    fn an_export_is_polled_until_written_and_one_runs_at_a_time() {
        let mut c = logged_in("compliance");
        c.on_key(key(KeyCode::Char('2')));
        c.on_outcome(Outcome::Sessions {
            rows: vec![SessionRow {
                id: "sess_a".into(),
                ..Default::default()
            }],
            next: None,
        });
        c.on_key(key(KeyCode::Char('e')));
        type_text(&mut c, "case 9");
        c.on_key(key(KeyCode::Enter));
        c.on_key(key(KeyCode::Enter));
        assert_eq!(
            c.on_key(key(KeyCode::Enter)),
            [Command::Export {
                sessions: vec!["sess_a".into()],
                reason: "case 9".into(),
                recipients: vec![],
                path: "custos-export.tar".into()
            }]
        );
        let running = ExportProgress {
            id: 4,
            state: "running".into(),
            total: 1,
            path: "custos-export.tar".into(),
            ..Default::default()
        };
        c.on_outcome(Outcome::Export(running));
        c.on_key(key(KeyCode::Char('e')));
        assert!(c.form.is_none(), "no second export while one is built");
        let polls: Vec<Command> = (0..3).flat_map(|_| c.on_tick()).collect();
        assert_eq!(
            polls,
            [Command::PollExport {
                id: 4,
                path: "custos-export.tar".into()
            }]
        );
        c.on_outcome(Outcome::Export(ExportProgress {
            state: "written".into(),
            message: "wrote export e1".into(),
            ..Default::default()
        }));
        assert!(c.export.is_none());
        assert_eq!(c.status, Some(("wrote export e1".into(), false)));
        assert!((0..10).flat_map(|_| c.on_tick()).next().is_none());
    }

    #[test]
    fn the_detail_switches_between_transcript_and_timeline() {
        let mut c = logged_in("admin");
        c.on_key(key(KeyCode::Char('2')));
        c.on_outcome(Outcome::Detail(Detail {
            transcript: vec!["a".into()],
            timeline: vec!["1".into(), "2".into(), "3".into()],
            ..Default::default()
        }));
        c.on_key(key(KeyCode::Down));
        assert_eq!(c.detail.as_ref().unwrap().scroll, 0, "one transcript line");
        c.on_key(key(KeyCode::Char('t')));
        c.on_key(key(KeyCode::Down));
        c.on_key(key(KeyCode::Down));
        c.on_key(key(KeyCode::Down));
        let d = c.detail.as_ref().unwrap();
        assert!(d.show_timeline);
        assert_eq!(d.scroll, 2);
    }

    #[test]
    fn search_words_become_filters_or_a_clear_error() {
        assert_eq!(
            search_params("ref:T-1 agent:alice").unwrap(),
            (
                vec![("ref", "T-1".to_string()), ("agent", "alice".to_string())],
                vec![]
            )
        );
        assert_eq!(
            search_params("printer jam ref:T-1").unwrap(),
            (
                vec![("ref", "T-1".to_string())],
                vec!["printer".to_string(), "jam".to_string()]
            )
        );
        assert_eq!(
            search_params("printer since:2026-01-01 customer:pia@example.org").unwrap(),
            (
                vec![
                    ("since", "2026-01-01".to_string()),
                    ("customer", "pia@example.org".to_string())
                ],
                vec!["printer".to_string()]
            )
        );
        assert!(
            search_params("colour:red")
                .unwrap_err()
                .contains("not a filter")
        );
        assert!(search_params("ref:").unwrap_err().contains("needs a value"));
    }
}
