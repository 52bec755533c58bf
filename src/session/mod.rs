//! Live support sessions: the queues, the agents' presence, and one room per waiting or active
//! session through which the relay forwards messages between the customer and the agent.
//!
//! Every state change is written to SQLite and the audit log first, then applied to the live
//! state, then announced (queue watchers, the customer's waiting room, the participants). The
//! relay path itself (a chat message going from one socket to the other) takes no database lock:
//! it forwards and hands the message to the session's recorder.
//!
//! The live state is rebuilt from SQLite at start, so a restart loses no waiting request and no
//! session; participants reconnect by themselves.

pub mod diagnostics;
pub mod protocol;
mod recorder;
pub mod screen;
pub mod terms;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::app::{App, Source};
use crate::audit::{self, Event, Outcome};
use crate::auth::Principal;
use crate::crypto;
use crate::model::{Role, now_rfc3339, unix_now};
use crate::store::{NewSession, SessionRow, StoreError};
use protocol::{ClientMsg, Side};
pub use recorder::{Record, Recorder};

/// A waiting room with the time it joined its queue.
type Queued = (Instant, Arc<Room>);

/// Outgoing messages waiting for one connection; a peer that lets it fill is disconnected.
pub const CONN_QUEUE: usize = 256;
/// Recent chat kept in memory per session for participants who reconnect.
const HISTORY: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadInput(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
    #[error("the appliance is sealed")]
    Sealed,
    #[error("{0}")]
    StorageFull(String),
}

/// What a connection's writer task receives.
#[derive(Debug)]
pub enum Out {
    Text(Arc<str>),
    /// A binary screen message (the screen socket only).
    Binary(hyper::body::Bytes),
    /// Close with this code and reason.
    Close(u16, &'static str),
}

pub type ConnTx = mpsc::Sender<Out>;

/// One participant's live connection. `kill` tells its socket task to close it (too slow, or
/// replaced).
#[derive(Clone)]
pub struct Conn {
    id: u64,
    tx: ConnTx,
    kill: Arc<tokio::sync::Notify>,
}

impl Conn {
    pub fn id(&self) -> u64 {
        self.id
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Available,
    Busy,
    Away,
    Offline,
}

impl Presence {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "available" => Some(Self::Available),
            "busy" => Some(Self::Busy),
            "away" => Some(Self::Away),
            "offline" => Some(Self::Offline),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Waiting,
    Active,
    Ended,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Waiting => "waiting",
            Status::Active => "active",
            Status::Ended => "ended",
            Status::Cancelled => "cancelled",
        }
    }
}

struct RoomState {
    status: Status,
    portal: String,
    skill: String,
    customer_name: String,
    question: String,
    external_ref: Option<String>,
    agent: Option<(i64, String)>,
    customer: Option<Conn>,
    agent_conn: Option<Conn>,
    seq: u64,
    /// When the session (re)entered the queue.
    queued_at: Instant,
    /// When the agent's connection went away (or the session was assigned), for the grace
    /// period after which it returns to the queue.
    agent_absent_since: Option<Instant>,
    /// Recorded messages as sent, for participants who reconnect: (message, agent only).
    history: VecDeque<(Arc<str>, bool)>,
    /// The note left by the last transfer, for the agent who takes the session over.
    transfer_note: Option<String>,
    /// When the request first entered the queue: a session put back keeps its place.
    first_queued: Instant,
    /// Installed packages from the latest diagnostics, for knowledge-base version rules.
    packages: Vec<(String, String)>,
}

/// A waiting or active session.
pub struct Room {
    pub id: String,
    /// Whether the portal records sessions.
    recording: bool,
    /// The screen relay (remote view and control).
    pub screen: screen::Screen,
    state: Mutex<RoomState>,
    recorder: Recorder,
    /// The portal's masking rules, applied to chat before it is relayed or stored.
    redact: Vec<crate::redact::Rule>,
}

struct AgentState {
    name: String,
    presence: Presence,
    since: Instant,
}

/// The live state of every queue and session.
pub struct Sessions {
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    agents: Mutex<HashMap<i64, AgentState>>,
    /// Recent waits per queue (portal/skill), for the estimate shown to customers.
    waits: Mutex<HashMap<String, VecDeque<u64>>>,
    changed: watch::Sender<u64>,
    next_conn: AtomicU64,
}

/// Who did something to a session.
#[derive(Clone, Debug)]
pub enum Actor {
    Agent(Principal),
    Customer,
    System,
}

impl Actor {
    pub fn event(&self, session: &str, source: &str, action: &str, details: Value) -> Event {
        let (actor, role) = match self {
            Actor::Agent(p) => (p.name.clone(), p.role.as_str().to_string()),
            Actor::Customer => (format!("customer:{session}"), "customer".to_string()),
            Actor::System => ("system".into(), "system".into()),
        };
        Event {
            actor,
            role,
            action: action.into(),
            target: format!("session:{session}"),
            outcome: Outcome::Success,
            source: source.into(),
            details,
        }
    }
}

/// A validated support request.
pub struct NewRequest {
    pub portal: String,
    pub skill: String,
    pub name: String,
    pub email: String,
    pub question: String,
    pub fields: serde_json::Map<String, Value>,
    pub external_ref: Option<String>,
    pub via: &'static str,
    pub recording: bool,
}

pub struct Created {
    pub id: String,
    pub customer_token: String,
    pub position: usize,
}

/// Transfer destinations.
pub enum Target {
    Agent(String),
    Queue { skill: Option<String> },
}

pub fn new_session_id() -> String {
    const B32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let bytes: [u8; 16] = crypto::random_array();
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = String::from("sess_");
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        n += 8;
        while n >= 5 {
            n -= 5;
            out.push(B32[((bits >> n) & 31) as usize] as char);
        }
    }
    if n > 0 {
        out.push(B32[((bits << (5 - n)) & 31) as usize] as char);
    }
    out
}

pub fn valid_session_id(s: &str) -> bool {
    s.len() == 31
        && s.starts_with("sess_")
        && s[5..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}

fn new_customer_token() -> String {
    format!(
        "ctk_{}",
        URL_SAFE_NO_PAD.encode(crypto::random_array::<32>())
    )
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new()
    }
}

impl Sessions {
    pub fn new() -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            agents: Mutex::new(HashMap::new()),
            waits: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
            next_conn: AtomicU64::new(1),
        }
    }

    /// A receiver that wakes whenever a queue or an agent's sessions change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn room(&self, id: &str) -> Option<Arc<Room>> {
        self.rooms.lock().expect("rooms").get(id).cloned()
    }

    /// Rebuilds rooms for every waiting and active session (at start).
    pub async fn load(app: &Arc<App>) -> Result<usize, SessionError> {
        let rows = app
            .db(|s| s.read(|tx| tx.sessions_with_status("waiting", "active")))
            .await?;
        let n = rows.len();
        for row in rows {
            if app.sessions.room(&row.id).is_some() {
                continue;
            }
            let room = Self::room_from_row(app, &row);
            app.sessions
                .rooms
                .lock()
                .expect("rooms")
                .insert(row.id.clone(), room);
        }
        app.sessions.announce();
        Ok(n)
    }

    fn room_from_row(app: &Arc<App>, row: &SessionRow) -> Arc<Room> {
        let status = if row.status == "active" {
            Status::Active
        } else {
            Status::Waiting
        };
        Arc::new(Room {
            redact: app
                .config
                .portal(&row.portal)
                .map(|p| p.redact.clone())
                .unwrap_or_default(),
            id: row.id.clone(),
            recording: row.recording,
            screen: screen::Screen::default(),
            recorder: Recorder::start(app.clone(), row.id.clone(), row.recording),
            state: Mutex::new(RoomState {
                status,
                portal: row.portal.clone(),
                skill: row.skill.clone(),
                customer_name: row.customer_name.clone(),
                question: row.question.clone(),
                external_ref: row.external_ref.clone(),
                agent: row.agent_id.zip(row.agent_name.clone()),
                customer: None,
                agent_conn: None,
                seq: 0,
                queued_at: Instant::now(),
                agent_absent_since: (status == Status::Active).then(Instant::now),
                history: VecDeque::new(),
                transfer_note: None,
                first_queued: Instant::now(),
                packages: Vec::new(),
            }),
        })
    }

    /// Every live room, copied out so that no room is locked while the map is.
    fn live_rooms(&self) -> Vec<Arc<Room>> {
        self.rooms
            .lock()
            .expect("rooms")
            .values()
            .cloned()
            .collect()
    }

    /// Bumps the change counter and tells every waiting customer their new position.
    fn announce(&self) {
        self.changed.send_modify(|v| *v += 1);
        let rooms = self.live_rooms();
        let mut queues: HashMap<(String, String), Vec<Queued>> = HashMap::new();
        for r in rooms {
            let st = r.state.lock().expect("room");
            if st.status == Status::Waiting {
                queues
                    .entry((st.portal.clone(), st.skill.clone()))
                    .or_default()
                    .push((st.queued_at, r.clone()));
            }
        }
        for ((portal, skill), mut list) in queues {
            list.sort_by_key(|(t, _)| *t);
            let avg = self.average_wait(&portal, &skill);
            for (i, (_, room)) in list.iter().enumerate() {
                let msg: Arc<str> = protocol::queue(i + 1, avg * (i as u64 + 1)).into();
                let st = room.state.lock().expect("room");
                if let Some(c) = &st.customer {
                    let _ = c.tx.try_send(Out::Text(msg));
                }
            }
        }
    }

    fn average_wait(&self, portal: &str, skill: &str) -> u64 {
        let waits = self.waits.lock().expect("waits");
        match waits.get(&format!("{portal}/{skill}")) {
            Some(w) if !w.is_empty() => (w.iter().sum::<u64>() / w.len() as u64).max(10),
            _ => 60,
        }
    }

    fn record_wait(&self, portal: &str, skill: &str, waited: Duration) {
        let mut waits = self.waits.lock().expect("waits");
        let w = waits.entry(format!("{portal}/{skill}")).or_default();
        w.push_back(waited.as_secs());
        if w.len() > 20 {
            w.pop_front();
        }
    }

    /// Creates a session: waiting in its queue, or (for a connection code) active with an agent.
    pub async fn create(
        app: &Arc<App>,
        req: NewRequest,
        agent: Option<(i64, String)>,
        source: &Source,
    ) -> Result<Created, SessionError> {
        app.storage_room().map_err(SessionError::StorageFull)?;
        let id = new_session_id();
        let token = new_customer_token();
        let hash = crate::auth::hash_token(&token);
        let now = now_rfc3339();
        let status = if agent.is_some() { "active" } else { "waiting" };
        let fields = serde_json::to_string(&req.fields).expect("fields serialize");
        let details = json!({ "portal": req.portal, "skill": req.skill, "via": req.via, "ref": req.external_ref, "agent": agent.as_ref().map(|a| &a.1) });
        let ev = Actor::Customer.event(&id, &source.to_string(), "request.created", details);
        let (sid, ag) = (id.clone(), agent.clone());
        let r = NewRequest {
            fields: Default::default(),
            ..req
        };
        let (portal, skill, name, email, question, ext, via, recording) = (
            r.portal.clone(),
            r.skill.clone(),
            r.name.clone(),
            r.email.clone(),
            r.question.clone(),
            r.external_ref.clone(),
            r.via,
            r.recording,
        );
        app.db(move |s| {
            s.write(|tx| {
                tx.session_insert(&NewSession {
                    id: &sid,
                    portal: &portal,
                    skill: &skill,
                    status,
                    via,
                    customer_name: &name,
                    customer_email: &email,
                    question: &question,
                    fields: &fields,
                    external_ref: ext.as_deref(),
                    customer_token_hash: &hash,
                    agent_id: ag.as_ref().map(|a| a.0),
                    recording,
                    now: &now,
                })?;
                tx.participant_join(&sid, "customer", None, &name, &now)?;
                if let Some((uid, uname)) = &ag {
                    tx.participant_join(&sid, "agent", Some(*uid), uname, &now)?;
                }
                audit::append_tx(tx, &[ev])
            })
        })
        .await?;
        let row = app
            .db({
                let id = id.clone();
                move |s| s.read(|tx| tx.session_get(&id))
            })
            .await?
            .ok_or_else(|| SessionError::NotFound("the new session vanished".into()))?;
        let room = Self::room_from_row(app, &row);
        app.sessions
            .rooms
            .lock()
            .expect("rooms")
            .insert(id.clone(), room.clone());
        room.record_event(
            json!({ "event": "created", "via": r.via, "portal": r.portal, "skill": r.skill }),
        )
        .await;
        if let Some((_, name)) = &agent {
            room.record_event(json!({ "event": "accepted", "agent": name }))
                .await;
        }
        app.sessions.announce();
        let position = app.sessions.position(&id).map_or(0, |p| p.0);
        Ok(Created {
            id,
            customer_token: token,
            position,
        })
    }

    /// (position from 1, estimated wait in seconds) of a waiting session.
    pub fn position(&self, id: &str) -> Option<(usize, u64)> {
        let room = self.room(id)?;
        let (portal, skill, at) = {
            let st = room.state.lock().expect("room");
            if st.status != Status::Waiting {
                return None;
            }
            (st.portal.clone(), st.skill.clone(), st.queued_at)
        };
        let ahead = self
            .rooms
            .lock()
            .expect("rooms")
            .values()
            .filter(|r| {
                let s = r.state.lock().expect("room");
                s.status == Status::Waiting
                    && s.portal == portal
                    && s.skill == skill
                    && s.queued_at < at
            })
            .count();
        Some((
            ahead + 1,
            self.average_wait(&portal, &skill) * (ahead as u64 + 1),
        ))
    }

    async fn agent_skills(app: &Arc<App>, uid: i64) -> Result<Vec<(String, String)>, SessionError> {
        Ok(app.db(move |s| s.read(|tx| tx.agent_skills(uid))).await?)
    }

    fn agent_load(&self, uid: i64) -> usize {
        self.rooms
            .lock()
            .expect("rooms")
            .values()
            .filter(|r| {
                let s = r.state.lock().expect("room");
                s.status == Status::Active && s.agent.as_ref().is_some_and(|a| a.0 == uid)
            })
            .count()
    }

    fn require_agent(p: &Principal) -> Result<(), SessionError> {
        if crate::auth::permits(p, crate::auth::Permission::HandleSessions) {
            Ok(())
        } else {
            Err(SessionError::Forbidden(format!(
                "the {} role does not handle sessions",
                p.role
            )))
        }
    }

    /// An agent takes a waiting session.
    pub async fn accept(
        app: &Arc<App>,
        p: &Principal,
        id: &str,
        source: &Source,
    ) -> Result<(), SessionError> {
        Self::require_agent(p)?;
        let room = app
            .sessions
            .room(id)
            .ok_or_else(|| SessionError::NotFound(format!("no waiting request {id}")))?;
        let skills = Self::agent_skills(app, p.user_id).await?;
        if app.sessions.agent_load(p.user_id) >= app.config.max_per_agent {
            return Err(SessionError::Conflict(format!(
                "you already handle {} sessions, the limit",
                app.config.max_per_agent
            )));
        }
        let (portal, skill, waited) = {
            let mut st = room.state.lock().expect("room");
            if st.status != Status::Waiting {
                return Err(SessionError::Conflict(
                    "this request is no longer waiting".into(),
                ));
            }
            if !skills
                .iter()
                .any(|(pp, ss)| pp == &st.portal && ss == &st.skill)
            {
                return Err(SessionError::Forbidden(format!(
                    "you are not an agent of {}/{}",
                    st.portal, st.skill
                )));
            }
            // Claimed under the room lock, so two agents cannot both take it.
            st.status = Status::Active;
            st.agent = Some((p.user_id, p.name.clone()));
            st.agent_absent_since = Some(Instant::now());
            (st.portal.clone(), st.skill.clone(), st.queued_at.elapsed())
        };
        let now = now_rfc3339();
        let ev = Actor::Agent(p.clone()).event(
            id,
            &source.to_string(),
            "request.accepted",
            json!({ "waited_s": waited.as_secs() }),
        );
        let (sid, uid, uname) = (id.to_string(), p.user_id, p.name.clone());
        let written = app
            .db(move |s| {
                s.write(|tx| {
                    tx.session_set_status(&sid, &["waiting"], "active", Some(uid), &now)?;
                    tx.participant_join(&sid, "agent", Some(uid), &uname, &now)?;
                    audit::append_tx(tx, &[ev])
                })
            })
            .await;
        if let Err(e) = written {
            let mut st = room.state.lock().expect("room");
            st.status = Status::Waiting;
            st.agent = None;
            return Err(e.into());
        }
        app.sessions.record_wait(&portal, &skill, waited);
        room.broadcast(
            &protocol::simple("accepted", json!({ "agent": p.name })),
            false,
        );
        room.record_event(json!({ "event": "accepted", "agent": p.name }))
            .await;
        app.sessions.announce();
        Ok(())
    }

    /// The agent takes the longest-waiting request they may take.
    pub async fn next(
        app: &Arc<App>,
        p: &Principal,
        source: &Source,
    ) -> Result<String, SessionError> {
        Self::require_agent(p)?;
        let skills = Self::agent_skills(app, p.user_id).await?;
        let mut candidates: Vec<(Instant, String)> = app
            .sessions
            .rooms
            .lock()
            .expect("rooms")
            .values()
            .filter_map(|r| {
                let s = r.state.lock().expect("room");
                let mine = skills
                    .iter()
                    .any(|(pp, ss)| pp == &s.portal && ss == &s.skill);
                (s.status == Status::Waiting && mine).then(|| (s.queued_at, r.id.clone()))
            })
            .collect();
        candidates.sort();
        for (_, id) in candidates {
            match Self::accept(app, p, &id, source).await {
                Ok(()) => return Ok(id),
                Err(SessionError::Conflict(m)) if m.contains("no longer waiting") => continue,
                Err(e) => return Err(e),
            }
        }
        Err(SessionError::Conflict(
            "nothing is waiting in your queues".into(),
        ))
    }

    /// Moves an active session to another agent or back to a queue.
    pub async fn transfer(
        app: &Arc<App>,
        p: &Principal,
        id: &str,
        target: Target,
        note: Option<String>,
        source: &Source,
    ) -> Result<(), SessionError> {
        Self::require_agent(p)?;
        let room = app
            .sessions
            .room(id)
            .ok_or_else(|| SessionError::NotFound(format!("no live session {id}")))?;
        let (portal, skill) = {
            let st = room.state.lock().expect("room");
            if st.status != Status::Active || st.agent.as_ref().map(|a| a.0) != Some(p.user_id) {
                return Err(SessionError::Forbidden(
                    "only the agent handling this session may transfer it".into(),
                ));
            }
            (st.portal.clone(), st.skill.clone())
        };
        let note = note.filter(|n| !n.trim().is_empty());
        if note.as_ref().is_some_and(|n| {
            n.chars().count() > 4000 || n.chars().any(|c| c.is_control() && c != '\n')
        }) {
            return Err(SessionError::BadInput(
                "the transfer note must be at most 4000 characters of text".into(),
            ));
        }
        let now = now_rfc3339();
        let (label, new_agent, new_skill) = match &target {
            Target::Agent(name) => {
                let n = name.clone();
                let user = app.db(move |s| s.read(|tx| tx.user_by_name(&n))).await?;
                let user = user
                    .filter(|u| !u.disabled && matches!(u.role, Role::Agent | Role::Admin))
                    .ok_or_else(|| SessionError::NotFound(format!("no agent named {name:?}")))?;
                if user.id == p.user_id {
                    return Err(SessionError::BadInput(
                        "the session is already yours".into(),
                    ));
                }
                let skills = Self::agent_skills(app, user.id).await?;
                if !skills.iter().any(|(pp, ss)| pp == &portal && ss == &skill) {
                    return Err(SessionError::Forbidden(format!(
                        "{name} is not an agent of {portal}/{skill}"
                    )));
                }
                if app.sessions.agent_load(user.id) >= app.config.max_per_agent {
                    return Err(SessionError::Conflict(format!(
                        "{name} already handles the most sessions allowed"
                    )));
                }
                (user.name.clone(), Some((user.id, user.name)), skill.clone())
            }
            Target::Queue { skill: s } => {
                let s = s.clone().unwrap_or(skill.clone());
                if !app
                    .config
                    .portal(&portal)
                    .is_some_and(|pp| pp.has_skill(&s))
                {
                    return Err(SessionError::BadInput(format!(
                        "portal {portal} has no skill {s:?}"
                    )));
                }
                ("queue".to_string(), None, s)
            }
        };
        let ev = Actor::Agent(p.clone()).event(
            id,
            &source.to_string(),
            "session.transferred",
            json!({ "to": label, "skill": new_skill, "note": note.is_some() }),
        );
        let (sid, from_uid, na, ns) = (
            id.to_string(),
            p.user_id,
            new_agent.clone(),
            new_skill.clone(),
        );
        let status = if na.is_some() { "active" } else { "waiting" };
        app.db(move |s| {
            s.write(|tx| {
                tx.session_set_status(&sid, &["active"], status, na.as_ref().map(|a| a.0), &now)?;
                tx.session_set_skill(&sid, &ns)?;
                tx.participant_leave(&sid, "agent", Some(from_uid), &now)?;
                if let Some((uid, uname)) = &na {
                    tx.participant_join(&sid, "agent", Some(*uid), uname, &now)?;
                }
                audit::append_tx(tx, &[ev])
            })
        })
        .await?;
        let old_conn = {
            let mut st = room.state.lock().expect("room");
            st.skill = new_skill;
            st.agent = new_agent.clone();
            st.agent_absent_since = Some(Instant::now());
            st.transfer_note = note.clone();
            if new_agent.is_none() {
                st.status = Status::Waiting;
                st.queued_at = st.first_queued;
            }
            st.agent_conn.take()
        };
        // The note is for the agent who takes over (it arrives in their hello), not the customer.
        let msg: Arc<str> = protocol::simple("transferred", json!({ "to": label })).into();
        if let Some(c) = old_conn {
            let _ = c.tx.try_send(Out::Text(msg.clone()));
        }
        room.send_to(Side::Customer, msg);
        room.record_event(
            json!({ "event": "transferred", "from": p.name, "to": label, "note": note }),
        )
        .await;
        app.sessions.announce();
        Ok(())
    }

    /// Ends a session (a waiting one is cancelled instead); returns the status it ended in. (agent or customer), sealing its recording.
    pub async fn end(
        app: &Arc<App>,
        actor: Actor,
        id: &str,
        source: &Source,
    ) -> Result<&'static str, SessionError> {
        let room = app
            .sessions
            .room(id)
            .ok_or_else(|| SessionError::Conflict(format!("session {id} is not live")))?;
        let (was_waiting, by) = {
            let mut st = room.state.lock().expect("room");
            if let Actor::Agent(p) = &actor
                && st.agent.as_ref().map(|a| a.0) != Some(p.user_id)
            {
                return Err(SessionError::Forbidden(
                    "only the agent handling this session may end it".into(),
                ));
            }
            if !matches!(st.status, Status::Waiting | Status::Active) {
                return Err(SessionError::Conflict("the session already ended".into()));
            }
            let waiting = st.status == Status::Waiting;
            st.status = if waiting {
                Status::Cancelled
            } else {
                Status::Ended
            };
            let by = match &actor {
                Actor::Agent(p) => p.name.clone(),
                Actor::Customer => "customer".into(),
                Actor::System => "system".into(),
            };
            (waiting, by)
        };
        let (status, action) = if was_waiting {
            ("cancelled", "request.cancelled")
        } else {
            ("ended", "session.ended")
        };
        let now = now_rfc3339();
        let ev = actor.event(id, &source.to_string(), action, json!({ "by": by }));
        let sid = id.to_string();
        let agent = room.state.lock().expect("room").agent.clone();
        let written = app
            .db(move |s| {
                s.write(|tx| {
                    let current = tx.session_get(&sid)?.map(|r| r.agent_id).unwrap_or(None);
                    tx.session_set_status(&sid, &["waiting", "active"], status, current, &now)?;
                    tx.participant_leave(&sid, "customer", None, &now)?;
                    if let Some((uid, _)) = &agent {
                        tx.participant_leave(&sid, "agent", Some(*uid), &now)?;
                    }
                    audit::append_tx(tx, &[ev])
                })
            })
            .await;
        if let Err(e) = written {
            // Nothing changed after all: the room goes back to how it was.
            room.state.lock().expect("room").status = if was_waiting {
                Status::Waiting
            } else {
                Status::Active
            };
            return Err(e.into());
        }
        room.broadcast(&protocol::simple("ended", json!({ "by": by })), false);
        room.record_event(json!({ "event": status, "by": by }))
            .await;
        room.recorder.finish().await;
        room.screen.finish(1000, "the session ended").await;
        app.sessions.rooms.lock().expect("rooms").remove(id);
        app.sessions.announce();
        Ok(status)
    }

    /// Records an agent's presence.
    pub fn set_presence(&self, p: &Principal, presence: Presence) {
        let mut agents = self.agents.lock().expect("agents");
        let a = agents.entry(p.user_id).or_insert(AgentState {
            name: p.name.clone(),
            presence,
            since: Instant::now(),
        });
        if a.presence != presence {
            a.presence = presence;
            a.since = Instant::now();
        }
        drop(agents);
        self.announce();
    }

    /// What an agent's console shows: the requests they may take and their own sessions.
    pub fn queue_view(&self, uid: i64, skills: &[(String, String)]) -> Value {
        let rooms = self.live_rooms();
        let mut waiting = Vec::new();
        let mut mine = Vec::new();
        for r in rooms {
            let st = r.state.lock().expect("room");
            let allowed = skills
                .iter()
                .any(|(p, s)| p == &st.portal && s == &st.skill);
            if st.status == Status::Waiting && allowed {
                waiting.push((
                    st.queued_at,
                    json!({
                        "request_id": r.id,
                        "portal": st.portal,
                        "skill": st.skill,
                        "name": st.customer_name,
                        "question": st.question,
                        "ref": st.external_ref,
                        "waited_s": st.queued_at.elapsed().as_secs(),
                    }),
                ));
            } else if st.status == Status::Active && st.agent.as_ref().is_some_and(|a| a.0 == uid) {
                mine.push(json!({
                    "session_id": r.id,
                    "customer": st.customer_name,
                    "portal": st.portal,
                    "skill": st.skill,
                    "ref": st.external_ref,
                    "status": st.status.as_str(),
                }));
            }
        }
        waiting.sort_by_key(|(t, _)| *t);
        json!({ "waiting": waiting.into_iter().map(|(_, v)| v).collect::<Vec<_>>(), "sessions": mine })
    }

    /// Every queue (portal and skill) with how many wait and the longest wait, for monitors.
    pub fn queues_view(&self, portals: &[crate::config::Portal]) -> Vec<Value> {
        let rooms = self.live_rooms();
        let mut out = Vec::new();
        for p in portals {
            for skill in &p.skills {
                let waits: Vec<u64> = rooms
                    .iter()
                    .filter_map(|r| {
                        let st = r.state.lock().expect("room");
                        (st.status == Status::Waiting && st.portal == p.name && &st.skill == skill)
                            .then(|| st.queued_at.elapsed().as_secs())
                    })
                    .collect();
                out.push(json!({ "portal": p.name, "skill": skill, "waiting": waits.len(), "longest_wait_s": waits.iter().max().copied().unwrap_or(0) }));
            }
        }
        out
    }

    /// Agents and their presence, for monitors.
    pub fn agents_view(&self) -> Vec<Value> {
        self.agents
            .lock()
            .expect("agents")
            .iter()
            .map(|(uid, a)| json!({ "name": a.name, "status": a.presence, "since_s": a.since.elapsed().as_secs(), "sessions": self.agent_load(*uid) }))
            .collect()
    }

    /// Returns to the queue every session whose agent has been away longer than the grace
    /// period. Run every few seconds.
    pub async fn sweep(app: &Arc<App>) {
        let grace = Duration::from_secs(app.config.agent_grace_s);
        let orphans: Vec<(Arc<Room>, i64)> = app
            .sessions
            .rooms
            .lock()
            .expect("rooms")
            .values()
            .filter_map(|r| {
                let st = r.state.lock().expect("room");
                let gone = st.status == Status::Active
                    && st.agent_conn.is_none()
                    && st.agent_absent_since.is_some_and(|t| t.elapsed() > grace);
                gone.then(|| (r.clone(), st.agent.as_ref().map_or(0, |a| a.0)))
            })
            .collect();
        for (room, uid) in orphans {
            let now = now_rfc3339();
            let sid = room.id.clone();
            let ev = Actor::System.event(&sid, "local", "session.requeued", json!({ "reason": "the agent was disconnected longer than the grace period", "grace_s": grace.as_secs() }));
            let written = app
                .db(move |s| {
                    s.write(|tx| {
                        tx.session_set_status(&sid, &["active"], "waiting", None, &now)?;
                        tx.participant_leave(&sid, "agent", Some(uid), &now)?;
                        audit::append_tx(tx, &[ev])
                    })
                })
                .await;
            if written.is_err() {
                continue;
            }
            {
                let mut st = room.state.lock().expect("room");
                st.status = Status::Waiting;
                st.agent = None;
                st.queued_at = st.first_queued;
                st.agent_absent_since = None;
            }
            room.send_to(
                Side::Customer,
                protocol::simple(
                    "transferred",
                    json!({ "to": "queue", "note": "your agent was disconnected" }),
                )
                .into(),
            );
            room.record_event(json!({ "event": "requeued", "reason": "agent disconnected" }))
                .await;
        }
        app.sessions.announce();
    }

    /// Attaches a participant's connection. Returns the room, the connection id and the hello.
    pub fn attach(
        &self,
        id: &str,
        side: Side,
        who: Option<&Principal>,
        tx: ConnTx,
        kill: Arc<tokio::sync::Notify>,
    ) -> Result<(Arc<Room>, u64, String), SessionError> {
        let room = self
            .room(id)
            .ok_or_else(|| SessionError::NotFound(format!("session {id} is not live")))?;
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (hello, replaced) = {
            let mut st = room.state.lock().expect("room");
            if side == Side::Agent {
                let p = who.expect("agents are authenticated");
                if st.status != Status::Active || st.agent.as_ref().map(|a| a.0) != Some(p.user_id)
                {
                    return Err(SessionError::Forbidden("this session is not yours".into()));
                }
            }
            let history: Vec<Value> = st
                .history
                .iter()
                .filter(|(_, agent_only)| side == Side::Agent || !agent_only)
                .filter_map(|(m, _)| serde_json::from_str(m).ok())
                .collect();
            let hello = json!({
                "type": "hello",
                "protocol": protocol::PROTOCOL_VERSION,
                "role": side.as_str(),
                "session": {
                    "id": room.id, "status": st.status.as_str(), "portal": st.portal, "skill": st.skill,
                    "customer": st.customer_name, "question": st.question, "ref": st.external_ref,
                    "agent": st.agent.as_ref().map(|a| &a.1),
                    "transfer_note": if side == Side::Agent { st.transfer_note.clone() } else { None },
                },
                "history": history,
            })
            .to_string();
            let conn = Conn {
                id: conn_id,
                tx,
                kill,
            };
            let replaced = match side {
                Side::Customer => st.customer.replace(conn),
                Side::Agent => {
                    st.agent_absent_since = None;
                    st.agent_conn.replace(conn)
                }
            };
            (hello, replaced)
        };
        if let Some(old) = replaced {
            let _ = old
                .tx
                .try_send(Out::Text(protocol::simple("replaced", json!({})).into()));
            let _ = old.tx.try_send(Out::Close(1000, "replaced"));
            old.kill.notify_one();
        }
        let name = who.map_or("customer".to_string(), |p| p.name.clone());
        room.send_to(
            other(side),
            protocol::simple(
                "participant",
                json!({ "event": "join", "who": side.as_str(), "name": name }),
            )
            .into(),
        );
        room.record_event_soon(json!({ "event": "join", "who": side.as_str(), "name": name }));
        if side == Side::Customer {
            self.announce();
        }
        Ok((room, conn_id, hello))
    }

    /// The command API's way into a live session: one message from its agent without a
    /// WebSocket, handled exactly as one that came over the agent's socket. Returns the message
    /// as the participants saw it (with its `seq`); a chat message is returned once the recorder
    /// has written it, with `recorded` saying whether it is durable in the archive. The agent's
    /// open console, if any, is shown the message too.
    pub async fn post_as_agent(
        &self,
        id: &str,
        who: &Principal,
        msg: ClientMsg,
    ) -> Result<Value, SessionError> {
        Self::require_agent(who)?;
        let msg = match msg {
            ClientMsg::Chat { text, .. } => ClientMsg::Chat {
                text,
                id: Some("http".into()),
            },
            m @ (ClientMsg::Url { .. } | ClientMsg::Note { .. } | ClientMsg::Sensitive { .. }) => m,
            ClientMsg::Typing { .. } | ClientMsg::Ping => {
                return Err(SessionError::BadInput(
                    "only chat, url, note and sensitive messages can be sent over HTTP".into(),
                ));
            }
        };
        let wants_ack = matches!(msg, ClientMsg::Chat { .. });
        let room = self
            .room(id)
            .ok_or_else(|| SessionError::NotFound(format!("session {id} is not live")))?;
        {
            let st = room.state.lock().expect("room");
            if st.agent.as_ref().map(|a| a.0) != Some(who.user_id) {
                return Err(SessionError::Forbidden("this session is not yours".into()));
            }
        }
        let (tx, mut rx) = mpsc::channel(CONN_QUEUE);
        room.handle(Side::Agent, &who.name, &tx, msg)
            .await
            .map_err(|r| match r.code {
                "not_active" => SessionError::Conflict(r.message),
                "forbidden" => SessionError::Forbidden(r.message),
                _ => SessionError::BadInput(r.message),
            })?;
        drop(tx);
        let text = |o: Option<Out>| match o {
            Some(Out::Text(t)) => serde_json::from_str::<Value>(&t).ok(),
            _ => None,
        };
        let mut shown = text(rx.recv().await).ok_or_else(|| {
            SessionError::Conflict("the session ended while the message was sent".into())
        })?;
        if let Some(o) = shown.as_object_mut() {
            o.remove("id");
        }
        room.send_to(Side::Agent, shown.to_string().into());
        if wants_ack {
            // The recorder acknowledges within its flush interval; a session that ends first
            // drops the sender, and the message is then reported as not known to be recorded.
            let ack = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .ok()
                .and_then(text);
            shown["recorded"] = json!(ack.is_some_and(|a| a["recorded"] == true));
        }
        Ok(shown)
    }

    /// What knowledge-base suggestions work from in a live session: what the customer has said
    /// (the request's question and their recent chat) and the packages from the latest
    /// diagnostics. Only the session's agent, or an admin, may ask.
    pub fn suggestion_inputs(
        &self,
        id: &str,
        who: &Principal,
    ) -> Result<(String, Vec<(String, String)>), SessionError> {
        let room = self
            .room(id)
            .ok_or_else(|| SessionError::NotFound(format!("session {id} is not live")))?;
        let st = room.state.lock().expect("room");
        if who.role != Role::Admin && st.agent.as_ref().map(|a| a.0) != Some(who.user_id) {
            return Err(SessionError::Forbidden("this session is not yours".into()));
        }
        let mut words = st.question.clone();
        for (m, _) in st.history.iter().rev().take(20) {
            if let Ok(v) = serde_json::from_str::<Value>(m)
                && v["type"] == "chat"
                && v["from"] == "customer"
                && let Some(t) = v["text"].as_str()
            {
                words.push(' ');
                words.push_str(t);
            }
        }
        Ok((words, st.packages.clone()))
    }

    /// Diagnostics arrived from the customer's machine (already stored): the agent is told, and
    /// its packages feed the suggestions.
    /// Stores a diagnostics document from the customer's machine (docs/formats/diagnostics.md)
    /// as an archive object, audits it, and shows its summary to the agent. Returns the object
    /// id and the summary.
    pub async fn receive_diagnostics(
        app: &Arc<App>,
        id: &str,
        source: &str,
        data: &[u8],
    ) -> Result<(String, Value), SessionError> {
        if !app.sessions.is_active(id) {
            return Err(SessionError::Conflict(
                "diagnostics can be sent while an agent has the session".into(),
            ));
        }
        let doc = diagnostics::parse(data).map_err(SessionError::BadInput)?;
        let summary = doc.summary();
        let packages = doc.package_versions();
        let mut line = serde_json::to_vec(&doc).expect("diagnostics serialize");
        line.push(b'\n');
        let keys = app.keys().ok_or(SessionError::Sealed)?;
        let archive = app.archive.clone();
        let ev = Actor::Customer.event(
            id,
            source,
            "session.diagnostics.received",
            json!({ "packages": packages.len(), "processes": doc.processes.len() }),
        );
        let sid = id.to_string();
        let object = app
            .db(move |s| -> Result<String, SessionError> {
                let internal =
                    |e: crate::archive::ArchiveError| SessionError::Internal(e.to_string());
                let mut w = archive
                    .create(s, &keys, Some(&sid), crate::model::DataClass::Diagnostics)
                    .map_err(internal)?;
                let oid = w.id().to_string();
                w.append(&line).map_err(internal)?;
                w.finish(s).map_err(internal)?;
                crate::audit::append(s, &[ev])
                    .map_err(|e| SessionError::Internal(e.to_string()))?;
                Ok(oid)
            })
            .await?;
        app.sessions
            .diagnostics_arrived(id, summary.clone(), packages)
            .await;
        Ok((object, summary))
    }

    pub async fn diagnostics_arrived(
        &self,
        id: &str,
        summary: Value,
        packages: Vec<(String, String)>,
    ) {
        let Some(room) = self.room(id) else { return };
        let text = protocol::simple(
            "diagnostics",
            json!({ "summary": summary, "at": now_rfc3339() }),
        );
        {
            let mut st = room.state.lock().expect("room");
            st.packages = packages;
            st.history.push_back((text.clone().into(), true));
            if st.history.len() > HISTORY {
                st.history.pop_front();
            }
        }
        room.broadcast(&text, true);
        room.record_event(json!({ "event": "diagnostics", "summary": summary }))
            .await;
    }

    /// The session's agent asks the customer's client for fresh diagnostics.
    pub fn request_diagnostics(&self, id: &str, who: &Principal) -> Result<(), SessionError> {
        Self::require_agent(who)?;
        let room = self
            .room(id)
            .ok_or_else(|| SessionError::NotFound(format!("session {id} is not live")))?;
        {
            let st = room.state.lock().expect("room");
            if st.agent.as_ref().map(|a| a.0) != Some(who.user_id) {
                return Err(SessionError::Forbidden("this session is not yours".into()));
            }
            if st.status != Status::Active {
                return Err(SessionError::Conflict("the session is not active".into()));
            }
        }
        room.send_to(
            Side::Customer,
            protocol::simple("diagnostics_request", json!({ "by": who.name })).into(),
        );
        room.screen
            .tell_sharer(json!({ "type": "diagnostics_request", "by": who.name }));
        Ok(())
    }

    /// Detaches a connection (if it is still the current one for its side).
    pub fn detach(&self, room: &Room, side: Side, conn_id: u64) {
        let left = {
            let mut st = room.state.lock().expect("room");
            let slot = match side {
                Side::Customer => &mut st.customer,
                Side::Agent => &mut st.agent_conn,
            };
            if slot.as_ref().is_some_and(|c| c.id == conn_id) {
                *slot = None;
                if side == Side::Agent {
                    st.agent_absent_since = Some(Instant::now());
                }
                true
            } else {
                false
            }
        };
        if left {
            room.send_to(
                other(side),
                protocol::simple(
                    "participant",
                    json!({ "event": "leave", "who": side.as_str() }),
                )
                .into(),
            );
            room.record_event_soon(json!({ "event": "leave", "who": side.as_str() }));
        }
    }

    /// Adds a sent file to the session: tells both sides and records the event.
    /// A file was sent into a live session; a screenshot is shown only to the agent.
    pub async fn file_sent(&self, id: &str, msg: Value, screenshot: bool) {
        if let Some(room) = self.room(id) {
            let text = protocol::simple("file", msg.clone());
            {
                let mut st = room.state.lock().expect("room");
                st.history.push_back((text.clone().into(), screenshot));
                if st.history.len() > HISTORY {
                    st.history.pop_front();
                }
            }
            room.broadcast(&text, screenshot);
            let mut ev = msg;
            ev["event"] = json!(if screenshot { "screenshot" } else { "file" });
            room.record_event(ev).await;
        }
    }

    /// The customer's view of a live session.
    pub fn customer_view(&self, id: &str) -> Option<Value> {
        let room = self.room(id)?;
        let st = room.state.lock().expect("room");
        Some(
            json!({ "status": st.status.as_str(), "agent": st.agent.as_ref().map(|a| &a.1), "portal": st.portal }),
        )
    }

    /// Whether `p` is the agent currently handling live session `id`.
    pub fn is_agent_of(&self, id: &str, p: &Principal) -> bool {
        self.room(id).is_some_and(|r| {
            r.state
                .lock()
                .expect("room")
                .agent
                .as_ref()
                .is_some_and(|a| a.0 == p.user_id)
        })
    }

    /// Suspends every live session when the appliance is sealed: participants are disconnected
    /// and recordings sealed; the sessions stay in SQLite and come back at the next unseal.
    pub async fn suspend_all(&self) -> usize {
        let rooms: Vec<Arc<Room>> = self
            .rooms
            .lock()
            .expect("rooms")
            .drain()
            .map(|(_, r)| r)
            .collect();
        for r in &rooms {
            let conns: Vec<Conn> = {
                let mut st = r.state.lock().expect("room");
                [st.customer.take(), st.agent_conn.take()]
                    .into_iter()
                    .flatten()
                    .collect()
            };
            for c in conns {
                let _ = c.tx.try_send(Out::Close(1012, "the appliance was sealed"));
                c.kill.notify_one();
            }
            r.recorder.finish().await;
            r.screen.finish(1012, "the appliance was sealed").await;
        }
        self.announce();
        rooms.len()
    }

    /// Seals every live session's recording (at shutdown). Returns how many.
    pub async fn seal_all(&self) -> usize {
        let rooms = self.live_rooms();
        for r in &rooms {
            r.recorder.finish().await;
            r.screen
                .finish(1001, "the appliance is shutting down")
                .await;
        }
        rooms.len()
    }

    /// A live session's room, for its screen relay.
    pub fn live(&self, id: &str) -> Option<Arc<Room>> {
        self.room(id)
    }

    /// A new connection (for the screen socket) with a fresh id.
    pub fn new_conn(&self, tx: ConnTx, kill: Arc<tokio::sync::Notify>) -> Conn {
        Conn {
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            tx,
            kill,
        }
    }

    /// Whether session `id` is active (an agent has it).
    pub fn is_active(&self, id: &str) -> bool {
        self.room(id).is_some_and(|r| r.is_active())
    }

    /// Sessions an agent handles now.
    pub fn load_of(&self, uid: i64) -> usize {
        self.agent_load(uid)
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Customer => Side::Agent,
        Side::Agent => Side::Customer,
    }
}

impl Room {
    fn send_to(&self, side: Side, msg: Arc<str>) {
        let target = {
            let st = self.state.lock().expect("room");
            match side {
                Side::Customer => st.customer.clone(),
                Side::Agent => st.agent_conn.clone(),
            }
        };
        if let Some(c) = target {
            self.deliver(side, &c, msg);
        }
    }

    /// Queues a message for a connection; a connection whose queue is full is cut off (it is
    /// too slow to keep up) rather than buffered without bound.
    fn deliver(&self, side: Side, c: &Conn, msg: Arc<str>) {
        if let Err(mpsc::error::TrySendError::Full(_)) = c.tx.try_send(Out::Text(msg)) {
            c.kill.notify_one();
            let mut st = self.state.lock().expect("room");
            let slot = match side {
                Side::Customer => &mut st.customer,
                Side::Agent => &mut st.agent_conn,
            };
            if slot.as_ref().is_some_and(|x| x.id == c.id) {
                *slot = None;
                if side == Side::Agent {
                    st.agent_absent_since = Some(Instant::now());
                }
            }
        }
    }

    fn broadcast(&self, msg: &str, agent_only: bool) {
        let msg: Arc<str> = msg.into();
        if !agent_only {
            self.send_to(Side::Customer, msg.clone());
        }
        self.send_to(Side::Agent, msg);
    }

    async fn record_event(&self, mut ev: Value) {
        ev["at"] = json!(now_rfc3339());
        self.recorder
            .send(Record::Event {
                line: ev.to_string(),
            })
            .await;
    }

    /// Records an event from a place that cannot wait (connect and disconnect).
    fn record_event_soon(&self, mut ev: Value) {
        if !matches!(
            self.state.lock().expect("room").status,
            Status::Waiting | Status::Active
        ) {
            return;
        }
        ev["at"] = json!(now_rfc3339());
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            recorder
                .send(Record::Event {
                    line: ev.to_string(),
                })
                .await
        });
    }

    /// Whether the session is active (an agent has it).
    pub fn is_active(&self) -> bool {
        self.state.lock().expect("room").status == Status::Active
    }

    /// Handles one parsed message from a participant: relays it, records it, and (for chat)
    /// acknowledges it once durable.
    pub async fn handle(
        &self,
        side: Side,
        who_name: &str,
        conn_tx: &ConnTx,
        msg: ClientMsg,
    ) -> Result<(), protocol::Refusal> {
        let refuse = |code: &'static str, m: &str| protocol::Refusal {
            code,
            message: m.to_string(),
        };
        let active = self.state.lock().expect("room").status == Status::Active;
        match msg {
            ClientMsg::Ping => {
                let _ = conn_tx.try_send(Out::Text(protocol::simple("pong", json!({})).into()));
                return Ok(());
            }
            ClientMsg::Typing { on } => {
                if active {
                    self.send_to(
                        other(side),
                        protocol::simple("typing", json!({ "from": side.as_str(), "on": on }))
                            .into(),
                    );
                }
                return Ok(());
            }
            _ if !active => {
                return Err(refuse(
                    "not_active",
                    "the session is not active: wait for an agent, or it has ended",
                ));
            }
            _ => {}
        }
        let at = now_rfc3339();
        let (line, to_peer, agent_only, ack_id) = {
            let mut st = self.state.lock().expect("room");
            st.seq += 1;
            let seq = st.seq;
            let (record, peer, agent_only, ack) = match msg {
                ClientMsg::Chat { text, id } => {
                    let (text, masked) = crate::redact::apply(&self.redact, &text);
                    let mut base = json!({ "type": "chat", "seq": seq, "from": side.as_str(), "name": who_name, "text": text, "at": at });
                    if masked > 0 {
                        base["masked"] = json!(masked);
                    }
                    (base.clone(), Some(base), false, id)
                }
                ClientMsg::Url { url, title } => {
                    if side != Side::Agent {
                        st.seq -= 1;
                        return Err(refuse("forbidden", "only the agent may push a link"));
                    }
                    let m = json!({ "type": "url", "seq": seq, "from": "agent", "name": who_name, "url": url, "title": title, "at": at });
                    (m.clone(), Some(m), false, None)
                }
                ClientMsg::Note { text } => {
                    if side != Side::Agent {
                        st.seq -= 1;
                        return Err(refuse("forbidden", "only the agent may write notes"));
                    }
                    let (text, _) = crate::redact::apply(&self.redact, &text);
                    let m = json!({ "type": "note", "seq": seq, "from": "agent", "name": who_name, "text": text, "at": at });
                    (m, None, true, None)
                }
                ClientMsg::Sensitive { seq: target } => {
                    if side != Side::Agent {
                        st.seq -= 1;
                        return Err(refuse(
                            "forbidden",
                            "only the agent may mark messages as sensitive",
                        ));
                    }
                    let mut found = false;
                    for (m, _) in st.history.iter_mut() {
                        if let Ok(mut v) = serde_json::from_str::<Value>(m)
                            && v["seq"] == json!(target)
                            && v["type"] == "chat"
                        {
                            v["text"] = json!("[marked sensitive]");
                            v["sensitive"] = json!(true);
                            *m = v.to_string().into();
                            found = true;
                        }
                    }
                    if !found {
                        st.seq -= 1;
                        return Err(refuse(
                            "bad_message",
                            "no chat message with that seq in this session",
                        ));
                    }
                    let m = json!({ "type": "sensitive", "seq": seq, "target": target, "from": "agent", "name": who_name, "at": at });
                    (m.clone(), Some(m), false, None)
                }
                ClientMsg::Ping | ClientMsg::Typing { .. } => unreachable!("handled above"),
            };
            let line = record.to_string();
            st.history.push_back((line.clone().into(), agent_only));
            if st.history.len() > HISTORY {
                st.history.pop_front();
            }
            (line, peer, agent_only, ack.map(|id| (id, seq)))
        };
        // Forward first: the relay never waits for the disk.
        let shared: Arc<str> = line.clone().into();
        if let Some(peer) = to_peer {
            let mut for_sender = peer.clone();
            if let Some((id, _)) = &ack_id {
                for_sender["id"] = json!(id);
            }
            self.send_to(other(side), shared.clone());
            let _ = conn_tx.try_send(Out::Text(for_sender.to_string().into()));
        } else if agent_only {
            let _ = conn_tx.try_send(Out::Text(shared.clone()));
        }
        let ack = ack_id.map(|(id, seq)| {
            (
                conn_tx.clone(),
                json!({ "type": "ack", "id": id, "seq": seq }).to_string(),
            )
        });
        self.recorder.send(Record::Transcript { line, ack }).await;
        Ok(())
    }
}

/// Checks a customer token against a session; constant time in the token.
pub async fn customer_may(app: &Arc<App>, id: &str, token: &str) -> Result<bool, SessionError> {
    if !valid_session_id(id) || !token.starts_with("ctk_") || token.len() > 100 {
        return Ok(false);
    }
    let (sid, h) = (id.to_string(), crate::auth::hash_token(token));
    Ok(app
        .db(move |s| s.read(|tx| tx.session_token_matches(&sid, &h)))
        .await?)
}

/// Codes: nine digits, shown in groups of three. 10^9 possibilities against at most 60 failed
/// tries a minute appliance-wide: with 1,000 live codes, a guesser has about a one in 16,000
/// chance per live code lifetime of ten minutes (docs/security.md works it out).
pub fn new_code() -> String {
    let n = u64::from_be_bytes(crypto::random_array()) % 1_000_000_000;
    format!("{n:09}")
}

pub fn normalize_code(s: &str) -> Option<String> {
    let digits: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    (digits.len() == 9 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

pub fn format_code(c: &str) -> String {
    format!("{} {} {}", &c[0..3], &c[3..6], &c[6..9])
}

/// Unix time, re-exported for handlers that compare code expiries.
pub fn now_unix() -> i64 {
    unix_now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_well_formed_and_distinct() {
        let a = new_session_id();
        assert!(valid_session_id(&a), "{a}");
        assert_ne!(a, new_session_id());
        assert!(!valid_session_id("sess_../../etc"));
    }

    #[test]
    fn codes_normalize() {
        let c = new_code();
        assert_eq!(normalize_code(&format_code(&c)).unwrap(), c);
        assert_eq!(normalize_code("123-456-789").unwrap(), "123456789");
        assert!(normalize_code("12345678").is_none());
        assert!(normalize_code("12345678a").is_none());
    }
}
