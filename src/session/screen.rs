//! The screen relay of a live session: the customer's native client shares (the *sharer*), the
//! session's agent watches and, with the user's consent, controls (the *viewer*). The relay
//! checks every binary message's structure (`remote::parse`), forwards it, and records it as it
//! was relayed: the recording is the stream itself (docs/formats/recording.md). Input is
//! forwarded only while the user has granted control and the agent has asked for it; anything
//! else is refused and audited.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::{Actor, Conn, Out, Room, SessionError, Side, Status};
use crate::app::App;
use crate::archive::ObjectWriter;
use crate::auth::Principal;
use crate::model::DataClass;
use crate::remote::{self, Consent, Input};

/// Record kinds in a recording object.
pub const REC_HEADER: u8 = 0;
pub const REC_SCREEN: u8 = 1;
pub const REC_EVENT: u8 = 2;
pub const REC_INPUT: u8 = 3;
/// Bytes before a record's payload: length (u32), time (u64 microseconds), kind (u8).
pub const REC_PREFIX: usize = 13;
/// Records waiting to be written; a full queue slows the sharer down.
const REC_QUEUE: usize = 64;
/// A refused input is audited at most this often per session (with the count since).
const REFUSAL_AUDIT_EVERY: Duration = Duration::from_secs(10);

/// A refusal for the participant's socket.
pub struct Refused {
    pub code: &'static str,
    pub message: String,
}

fn refused(code: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

enum Rec {
    Data {
        at_us: u64,
        kind: u8,
        data: Bytes,
        keyframe: bool,
    },
    Finish(oneshot::Sender<()>),
}

#[derive(Default)]
struct State {
    sharer: Option<Conn>,
    viewer: Option<(Conn, Principal)>,
    consent: Consent,
    wants_control: bool,
    size: Option<(u16, u16)>,
    refused_inputs: u64,
    refusal_audited: Option<Instant>,
    keyframe_asked: Option<Instant>,
    rec: Option<mpsc::Sender<Rec>>,
    finished: bool,
    /// SHA-256 of the sharer's current resume token: one token, replaced at every connection.
    resume: Option<[u8; 32]>,
    /// The sharer said it is restarting the machine.
    rebooting: bool,
}

#[derive(Default)]
pub struct Screen {
    st: Mutex<State>,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn send(c: &Conn, msg: Value) {
    if c.tx.try_send(Out::Text(msg.to_string().into())).is_err() {
        c.kill.notify_one();
    }
}

impl State {
    fn control_on(&self) -> bool {
        self.consent.control && self.wants_control && self.viewer.is_some()
    }
}

impl Screen {
    /// Connects a participant to the screen relay; returns the connection's id and its hello.
    pub fn attach(
        &self,
        app: &Arc<App>,
        room: &Room,
        side: Side,
        who: Option<&Principal>,
        conn: Conn,
    ) -> Result<String, SessionError> {
        let resume_token = format!(
            "rtk_{}",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                crate::crypto::random_array::<32>()
            )
        );
        {
            let rs = room.state.lock().expect("room");
            if side == Side::Agent {
                let p = who.expect("agents are authenticated");
                if rs.status != Status::Active || rs.agent.as_ref().map(|a| a.0) != Some(p.user_id)
                {
                    return Err(SessionError::Forbidden("this session is not yours".into()));
                }
            } else if !matches!(rs.status, Status::Active | Status::Waiting) {
                return Err(SessionError::Conflict("the session is over".into()));
            }
        }
        let mut st = self.st.lock().expect("screen");
        let old = match side {
            Side::Customer => st.sharer.replace(conn),
            Side::Agent => st
                .viewer
                .replace((conn, who.expect("agent").clone()))
                .map(|(c, _)| c),
        };
        if let Some(old) = old {
            let _ = old.tx.try_send(Out::Close(1000, "replaced"));
            old.kill.notify_one();
        }
        let resumed = side == Side::Customer && std::mem::take(&mut st.rebooting);
        let hello = match side {
            Side::Customer => {
                st.resume = Some(crate::crypto::sha256(resume_token.as_bytes()));
                if let Some((_, p)) = &st.viewer {
                    let sharer = st.sharer.as_ref().expect("just set");
                    send(
                        sharer,
                        json!({"type": "viewer", "on": true, "name": p.name}),
                    );
                }
                json!({"type": "hello", "protocol": 1, "role": "sharer", "viewer": st.viewer.is_some(),
                       "resume_token": resume_token})
            }
            Side::Agent => {
                if let Some(s) = &st.sharer {
                    let name = &who.expect("agent").name;
                    send(s, json!({"type": "viewer", "on": true, "name": name}));
                }
                json!({"type": "hello", "protocol": 1, "role": "viewer", "sharer": st.sharer.is_some(),
                       "consent": st.consent, "control": st.control_on(), "size": st.size})
            }
        };
        let ev = if resumed {
            json!({"event": "screen.resumed", "who": side.as_str()})
        } else {
            json!({"event": "screen.join", "who": side.as_str()})
        };
        drop(st);
        room.record_event_soon(ev.clone());
        self.record(app, room, REC_EVENT, Bytes::from(ev.to_string()), false);
        if side == Side::Customer {
            self.tell_viewer(json!({"type": "sharer", "on": true, "resumed": resumed}));
        }
        Ok(hello.to_string())
    }

    pub fn detach(&self, app: &Arc<App>, room: &Room, side: Side, conn_id: u64) {
        let mut st = self.st.lock().expect("screen");
        let gone = match side {
            Side::Customer if st.sharer.as_ref().is_some_and(|c| c.id == conn_id) => {
                st.sharer = None;
                // Consent was given by the client that left; a client that comes back gives
                // it again.
                st.consent = Consent::default();
                st.wants_control = false;
                if let Some((v, _)) = &st.viewer {
                    send(
                        v,
                        json!({"type": "sharer", "on": false, "rebooting": st.rebooting}),
                    );
                    send(
                        v,
                        json!({"type": "consent", "consent": st.consent, "control": false}),
                    );
                }
                true
            }
            Side::Agent if st.viewer.as_ref().is_some_and(|(c, _)| c.id == conn_id) => {
                st.viewer = None;
                st.wants_control = false;
                if let Some(s) = &st.sharer {
                    send(s, json!({"type": "viewer", "on": false}));
                    send(s, json!({"type": "control", "on": false}));
                }
                true
            }
            _ => false,
        };
        drop(st);
        if gone {
            let ev = json!({"event": "screen.leave", "who": side.as_str()});
            room.record_event_soon(ev.clone());
            self.record(app, room, REC_EVENT, Bytes::from(ev.to_string()), false);
        }
    }

    /// Whether `token` is this session's current resume token (compared in constant time).
    pub fn resume_ok(&self, token: &str) -> bool {
        let st = self.st.lock().expect("screen");
        st.resume
            .is_some_and(|h| crate::crypto::ct_eq(&h, &crate::crypto::sha256(token.as_bytes())))
    }

    /// Sends a message to the sharing client, if one is connected.
    pub fn tell_sharer(&self, msg: Value) {
        if let Some(s) = &self.st.lock().expect("screen").sharer {
            send(s, msg);
        }
    }

    fn tell_viewer(&self, msg: Value) {
        if let Some((v, _)) = &self.st.lock().expect("screen").viewer {
            send(v, msg);
        }
    }

    /// A binary screen message from a participant.
    pub async fn binary(
        &self,
        app: &Arc<App>,
        room: &Room,
        side: Side,
        data: Bytes,
    ) -> Result<(), Refused> {
        if side != Side::Customer {
            return Err(refused(
                "bad_message",
                "only the sharing client sends screen data",
            ));
        }
        let msg = remote::parse(&data).map_err(|e| refused("bad_frame", e.to_string()))?;
        let keyframe = match &msg {
            remote::Message::Update(u) => u.keyframe(),
            remote::Message::Media { start, .. } => *start,
            remote::Message::Cursor { .. } => false,
        };
        let target = {
            let mut st = self.st.lock().expect("screen");
            if !st.consent.view {
                return Err(refused(
                    "not_consented",
                    "the user has not allowed viewing; screen data is not relayed",
                ));
            }
            match msg {
                remote::Message::Update(u) => st.size = Some((u.width, u.height)),
                remote::Message::Media { .. } => {}
                remote::Message::Cursor { x, y } => match st.size {
                    Some((w, h)) if x < w && y < h => {}
                    _ => {
                        return Err(refused(
                            "bad_frame",
                            remote::FrameError::CursorBounds(x, y).to_string(),
                        ));
                    }
                },
            }
            st.viewer.as_ref().map(|(c, _)| c.clone())
        };
        if let Some(v) = target
            && v.tx.try_send(Out::Binary(data.clone())).is_err()
        {
            // The agent's link is slower than the screen changes: drop this update and ask for
            // a keyframe, at most once a second, so the view catches up whole.
            let mut st = self.st.lock().expect("screen");
            if st
                .keyframe_asked
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
            {
                st.keyframe_asked = Some(Instant::now());
                if let Some(s) = &st.sharer {
                    send(s, json!({"type": "keyframe"}));
                }
            }
        }
        self.record_wait(app, room, REC_SCREEN, data, keyframe)
            .await;
        Ok(())
    }

    /// A JSON message on the screen socket.
    pub async fn text(
        &self,
        app: &Arc<App>,
        room: &Room,
        side: Side,
        who: Option<&Principal>,
        text: &str,
    ) -> Result<(), Refused> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| refused("bad_message", format!("not a JSON object: {e}")))?;
        let kind = v["type"].as_str().unwrap_or("").to_string();
        match (side, kind.as_str()) {
            (Side::Customer, "consent") => {
                let mut body = v.clone();
                if let Some(o) = body.as_object_mut() {
                    o.remove("type");
                }
                let c: Consent = serde_json::from_value(body)
                    .map_err(|e| refused("bad_message", format!("bad consent: {e}")))?;
                self.set_consent(app, room, c).await;
                Ok(())
            }
            (Side::Agent, "control") => {
                let on = v["on"]
                    .as_bool()
                    .ok_or_else(|| refused("bad_message", "control needs \"on\": true or false"))?;
                self.want_control(app, room, who.expect("agent"), on).await;
                Ok(())
            }
            (Side::Agent, "keyframe") => {
                if let Some(s) = &self.st.lock().expect("screen").sharer {
                    send(s, json!({"type": "keyframe"}));
                }
                Ok(())
            }
            (Side::Agent, "input") => self.input(app, room, who.expect("agent"), v).await,
            (Side::Agent, "reboot") => self.reboot(app, room, who.expect("agent")).await,
            (Side::Agent, "annotate") => self.annotate(app, room, who.expect("agent"), v).await,
            (Side::Customer, "diagnostics") => {
                if !self.st.lock().expect("screen").consent.diagnostics {
                    return Err(refused(
                        "not_consented",
                        "send your consent to diagnostics first",
                    ));
                }
                let doc = serde_json::to_vec(&v["document"]).expect("JSON values serialize");
                match super::Sessions::receive_diagnostics(app, &room.id, "screen", &doc).await {
                    Ok((object, _)) => {
                        self.tell_sharer(json!({"type": "diagnostics_received", "object": object}));
                        Ok(())
                    }
                    Err(e) => Err(refused("bad_diagnostics", e.to_string())),
                }
            }
            (Side::Customer, "rebooting") => {
                self.st.lock().expect("screen").rebooting = true;
                let ev = json!({"event": "screen.rebooting"});
                room.record_event(ev.clone()).await;
                self.record_wait(app, room, REC_EVENT, Bytes::from(ev.to_string()), false)
                    .await;
                Ok(())
            }
            (_, "ping") => Ok(()),
            (_, t) => Err(refused(
                "bad_message",
                format!("unknown message type {t:?} from the {}", side.as_str()),
            )),
        }
    }

    async fn set_consent(&self, app: &Arc<App>, room: &Room, c: Consent) {
        let (changed, control_before, control_after) = {
            let mut st = self.st.lock().expect("screen");
            let before = st.control_on();
            let changed = st.consent != c;
            st.consent = c;
            let after = st.control_on();
            if let Some((v, _)) = &st.viewer {
                send(
                    v,
                    json!({"type": "consent", "consent": c, "control": after}),
                );
            }
            if before != after
                && let Some(s) = &st.sharer
            {
                send(s, json!({"type": "control", "on": after}));
            }
            (changed, before, after)
        };
        if changed {
            let ev = json!({"event": "consent", "consent": c});
            room.record_event(ev.clone()).await;
            self.record_wait(app, room, REC_EVENT, Bytes::from(ev.to_string()), false)
                .await;
            let _ = app
                .audit(Actor::Customer.event(&room.id, "screen", "remote.consent", json!(c)))
                .await;
        }
        if control_before != control_after {
            self.control_changed(app, room, None, control_after).await;
        }
    }

    async fn want_control(&self, app: &Arc<App>, room: &Room, who: &Principal, on: bool) {
        let (before, after) = {
            let mut st = self.st.lock().expect("screen");
            let before = st.control_on();
            st.wants_control = on;
            let after = st.control_on();
            if let Some(s) = &st.sharer {
                if on && !st.consent.control {
                    send(s, json!({"type": "control_request", "by": who.name}));
                }
                if before != after {
                    send(s, json!({"type": "control", "on": after}));
                }
            }
            if let Some((v, _)) = &st.viewer {
                send(v, json!({"type": "control", "on": after, "requested": on}));
            }
            (before, after)
        };
        let ev = json!({"event": if on { "control.requested" } else { "control.released" }, "by": who.name});
        room.record_event(ev.clone()).await;
        self.record_wait(app, room, REC_EVENT, Bytes::from(ev.to_string()), false)
            .await;
        if before != after {
            self.control_changed(app, room, Some(who), after).await;
        }
    }

    async fn control_changed(
        &self,
        app: &Arc<App>,
        room: &Room,
        who: Option<&Principal>,
        on: bool,
    ) {
        let actor = match who {
            Some(p) => Actor::Agent(p.clone()),
            None => Actor::Customer,
        };
        let ev = json!({"event": if on { "control.on" } else { "control.off" }});
        room.record_event(ev.clone()).await;
        self.record_wait(app, room, REC_EVENT, Bytes::from(ev.to_string()), false)
            .await;
        let _ = app
            .audit(actor.event(&room.id, "screen", "remote.control", json!({ "on": on })))
            .await;
    }

    async fn annotate(
        &self,
        app: &Arc<App>,
        room: &Room,
        who: &Principal,
        v: Value,
    ) -> Result<(), Refused> {
        let (sharer, size) = {
            let st = self.st.lock().expect("screen");
            if !st.consent.view {
                return Err(refused(
                    "not_consented",
                    "the user is not sharing their screen",
                ));
            }
            (st.sharer.clone(), st.size)
        };
        let (w, h) = size.ok_or_else(|| {
            refused(
                "bad_message",
                "annotations need a screen shared by the Custos client",
            )
        })?;
        let a = remote::Annotation::parse(v, w, h).map_err(|e| refused("bad_input", e))?;
        let mut out = serde_json::to_value(&a).expect("annotations serialize");
        out["type"] = json!("annotate");
        if let Some(s) = sharer {
            send(&s, out.clone());
        }
        self.record_wait(app, room, REC_INPUT, Bytes::from(out.to_string()), false)
            .await;
        let op = match a {
            remote::Annotation::Stroke { .. } => "stroke",
            remote::Annotation::Clear => "clear",
        };
        room.record_event(json!({"event": "annotation", "op": op, "by": who.name}))
            .await;
        Ok(())
    }

    async fn reboot(&self, app: &Arc<App>, room: &Room, who: &Principal) -> Result<(), Refused> {
        {
            let st = self.st.lock().expect("screen");
            if !st.consent.reboot {
                return Err(refused(
                    "not_consented",
                    "the user has not allowed restarting their computer",
                ));
            }
            let s = st
                .sharer
                .as_ref()
                .ok_or_else(|| refused("bad_message", "the client is not connected"))?;
            send(s, json!({"type": "reboot_request", "by": who.name}));
        }
        let ev = json!({"event": "reboot.requested", "by": who.name});
        room.record_event(ev.clone()).await;
        self.record_wait(app, room, REC_EVENT, Bytes::from(ev.to_string()), false)
            .await;
        let _ = app
            .audit(Actor::Agent(who.clone()).event(&room.id, "screen", "remote.reboot", json!({})))
            .await;
        Ok(())
    }

    async fn input(
        &self,
        app: &Arc<App>,
        room: &Room,
        who: &Principal,
        v: Value,
    ) -> Result<(), Refused> {
        let granted = {
            let mut st = self.st.lock().expect("screen");
            if st.control_on() {
                Ok((st.sharer.clone(), st.size))
            } else {
                st.refused_inputs += 1;
                let due = st
                    .refusal_audited
                    .is_none_or(|t| t.elapsed() >= REFUSAL_AUDIT_EVERY);
                if due {
                    st.refusal_audited = Some(Instant::now());
                }
                Err(due.then(|| std::mem::take(&mut st.refused_inputs)))
            }
        };
        let (sharer, size) = match granted {
            Ok(g) => g,
            Err(count) => {
                if let Some(n) = count {
                    let mut ev = Actor::Agent(who.clone()).event(
                        &room.id,
                        "screen",
                        "remote.input_refused",
                        json!({ "count": n, "reason": "control is not granted" }),
                    );
                    ev.outcome = crate::audit::Outcome::Denied;
                    let _ = app.audit(ev).await;
                }
                return Err(refused(
                    "control_not_granted",
                    "input is refused: the user has not granted control, or it was not requested",
                ));
            }
        };
        let (w, h) = size.ok_or_else(|| refused("bad_message", "no screen is shared yet"))?;
        let input = Input::parse(v, w, h).map_err(|e| refused("bad_input", e))?;
        let mut out = serde_json::to_value(&input).expect("input serializes");
        out["type"] = json!("input");
        if let Some(s) = sharer {
            send(&s, out.clone());
        }
        self.record_wait(app, room, REC_INPUT, Bytes::from(out.to_string()), false)
            .await;
        Ok(())
    }

    /// The recorder's queue, started with the session's first recorded screen record.
    fn recorder(&self, app: &Arc<App>, room: &Room) -> Option<mpsc::Sender<Rec>> {
        let mut st = self.st.lock().expect("screen");
        if st.finished || !room.recording {
            return None;
        }
        if st.rec.is_none() {
            let (tx, rx) = mpsc::channel(REC_QUEUE);
            tokio::spawn(run_recorder(app.clone(), room.id.clone(), rx));
            st.rec = Some(tx);
        }
        st.rec.clone()
    }

    fn record(&self, app: &Arc<App>, room: &Room, kind: u8, data: Bytes, keyframe: bool) {
        if let Some(tx) = self.recorder(app, room) {
            let at_us = now_us();
            tokio::spawn(async move {
                let _ = tx
                    .send(Rec::Data {
                        at_us,
                        kind,
                        data,
                        keyframe,
                    })
                    .await;
            });
        }
    }

    async fn record_wait(
        &self,
        app: &Arc<App>,
        room: &Room,
        kind: u8,
        data: Bytes,
        keyframe: bool,
    ) {
        if let Some(tx) = self.recorder(app, room) {
            let _ = tx
                .send(Rec::Data {
                    at_us: now_us(),
                    kind,
                    data,
                    keyframe,
                })
                .await;
        }
    }

    /// Closes both sides and seals the recording (the session ended, or the appliance stops).
    pub async fn finish(&self, code: u16, reason: &'static str) {
        let (conns, rec) = {
            let mut st = self.st.lock().expect("screen");
            st.finished = true;
            let conns: Vec<Conn> = st
                .sharer
                .take()
                .into_iter()
                .chain(st.viewer.take().map(|(c, _)| c))
                .collect();
            (conns, st.rec.take())
        };
        for c in conns {
            let _ = c.tx.try_send(Out::Close(code, reason));
            c.kill.notify_one();
        }
        if let Some(tx) = rec {
            let (done, wait) = oneshot::channel();
            if tx.send(Rec::Finish(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
    }
}

/// Why records could not be read from an offset.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    NotARecord(String),
    #[error(transparent)]
    Stream(#[from] crate::archive::stream::StreamError),
}

/// Whole records of a sealed recording from `offset` (a record's start) until at least
/// `max` bytes or the end; returns them and the offset after them. Reads only the chunks that
/// hold them.
pub fn read_records<R: std::io::Read + std::io::Seek>(
    r: &mut crate::archive::stream::SeekableReader<R>,
    offset: u64,
    max: usize,
) -> Result<(Vec<u8>, u64), ReadError> {
    let total = r.plain_len();
    let mut out = Vec::new();
    let mut at = offset;
    while at < total && out.len() < max {
        let head = r.read_at(at, REC_PREFIX)?;
        let len = head
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .unwrap_or(0);
        if head.len() < REC_PREFIX
            || !(REC_PREFIX - 4..=crate::remote::MAX_MESSAGE + 64 * 1024).contains(&len)
        {
            return Err(ReadError::NotARecord(format!(
                "offset {at} is not the start of a record"
            )));
        }
        let rec = r.read_at(at, len + 4)?;
        if rec.len() != len + 4 {
            return Err(ReadError::NotARecord(format!(
                "the record at offset {at} runs past the end"
            )));
        }
        out.extend_from_slice(&rec);
        at += rec.len() as u64;
    }
    Ok((out, at))
}

/// Appends one record to a recording object.
pub fn write_record(
    w: &mut ObjectWriter,
    at_us: u64,
    kind: u8,
    data: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(data.len() + REC_PREFIX - 4)
        .map_err(|_| std::io::Error::other("record too large"))?;
    let mut head = [0u8; REC_PREFIX];
    head[..4].copy_from_slice(&len.to_le_bytes());
    head[4..12].copy_from_slice(&at_us.to_le_bytes());
    head[12] = kind;
    w.append(&head).map_err(std::io::Error::other)?;
    w.append(data).map_err(std::io::Error::other)
}

async fn run_recorder(app: Arc<App>, session: String, mut rx: mpsc::Receiver<Rec>) {
    let mut writer: Option<ObjectWriter> = None;
    let mut failed = false;
    let mut batch = Vec::with_capacity(16);
    loop {
        if rx.recv_many(&mut batch, 32).await == 0 {
            break;
        }
        let mut finish = None;
        let mut data = Vec::new();
        for r in batch.drain(..) {
            match r {
                Rec::Data {
                    at_us,
                    kind,
                    data: d,
                    keyframe,
                } => data.push((at_us, kind, d, keyframe)),
                Rec::Finish(done) => finish = Some(done),
            }
        }
        if !data.is_empty() && writer.is_none() && !failed {
            writer = super::recorder::open(&app, &session, DataClass::Recording).await;
            failed = writer.is_none();
            if let Some(w) = writer.as_mut() {
                let head =
                    json!({"format": "custos-recording", "v": 1, "session": session}).to_string();
                if write_record(w, now_us(), REC_HEADER, head.as_bytes()).is_err() {
                    writer = None;
                    failed = true;
                }
            }
        }
        if let Some(mut w) = writer.take() {
            let (w2, keyframes) = tokio::task::spawn_blocking(move || {
                let mut keyframes = Vec::new();
                for (at_us, kind, d, key) in &data {
                    let offset = w.plain_len();
                    if write_record(&mut w, *at_us, *kind, d).is_err() {
                        tracing::error!(object = %w.id(), "writing a screen recording failed; its recording stopped");
                        return (None, keyframes);
                    }
                    if *key {
                        keyframes.push(((at_us / 1000) as i64, offset as i64));
                    }
                }
                if w.sync_if_due(Duration::from_secs(1)).is_err() {
                    return (None, keyframes);
                }
                (Some(w), keyframes)
            })
            .await
            .expect("screen recorder panicked");
            failed |= w2.is_none();
            writer = w2;
            if let (Some(w), false) = (&writer, keyframes.is_empty()) {
                let id = w.id();
                if let Err(e) = app
                    .db(move |s| s.write(|tx| tx.recording_keyframes_add(id, &keyframes)))
                    .await
                {
                    tracing::warn!(error = %e, "cannot index a recording's keyframes");
                }
            }
        }
        if let Some(done) = finish {
            super::recorder::seal_objects(
                &app,
                &session,
                writer.take().into_iter().collect(),
                "ended",
            )
            .await;
            let _ = done.send(());
            return;
        }
    }
    super::recorder::seal_objects(
        &app,
        &session,
        writer.take().into_iter().collect(),
        "shutdown",
    )
    .await;
}
