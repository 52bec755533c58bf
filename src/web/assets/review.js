// Custos session review: plays a session's screen recording (docs/formats/recording.md) with
// its timeline. Opening the index is the audited act; the records are then read from the
// keyframe before the wanted moment in pieces of at most 1 MiB, so seeking never loads the
// whole recording. Plain ES2020, no dependencies; text from the network goes in as textContent.
'use strict';

(() => {
  const { API, el, str, showError, setText, api, setAuthFailureHandler } = window.CustosCommon;
  const ui = {};
  const P = { objects: [], start: 0, end: 0, pos: 0, playing: false, gen: 0, reader: null, pending: null, ticket: '', id: '' };
  let painter = null;
  let media = null;

  function clock(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = String(s % 60).padStart(2, '0');
    return h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
  }

  // Reads one recording object's records forward from an offset, a piece at a time.
  class Reader {
    constructor(obj, offset) {
      this.obj = obj;
      this.next = offset;
      this.buf = null;
      this.at = 0;
      this.done = false;
    }

    async fill() {
      const url = `${API}/sessions/${encodeURIComponent(P.id)}/recording/${encodeURIComponent(this.obj.object)}/data` +
        `?offset=${this.next}&ticket=${encodeURIComponent(P.ticket)}`;
      const res = await fetch(url, { credentials: 'same-origin' });
      if (!res.ok) throw new Error(`Reading the recording failed (HTTP ${res.status}).`);
      this.buf = await res.arrayBuffer();
      this.at = 0;
      const next = Number(res.headers.get('x-custos-next-offset'));
      const total = Number(res.headers.get('x-custos-length'));
      this.next = next;
      if (next >= total || this.buf.byteLength === 0) this.done = true;
    }

    // The next record, or null at the end of the object.
    async record() {
      if (!this.buf || this.at >= this.buf.byteLength) {
        if (this.done) return null;
        await this.fill();
        if (this.buf.byteLength === 0) return null;
      }
      const d = new DataView(this.buf, this.at);
      const len = d.getUint32(0, true);
      const atMs = Number(d.getBigUint64(4, true) / 1000n);
      const kind = d.getUint8(12);
      const payload = this.buf.slice(this.at + 13, this.at + 4 + len);
      this.at += 4 + len;
      return { at: atMs, kind, payload };
    }
  }

  async function apply(rec) {
    if (rec.kind !== 1) return;
    if (window.CustosScreenKind(rec.payload) === 3) {
      ui.canvas.hidden = true;
      ui.video.hidden = false;
      media.push(rec.payload);
      return;
    }
    ui.canvas.hidden = false;
    ui.video.hidden = true;
    const m = await painter.apply(rec.payload);
    if (m && m.kind === 2) {
      const c = ui.canvas;
      ui.cursor.hidden = false;
      ui.cursor.style.left = `${(m.x / c.width) * 100}%`;
      ui.cursor.style.top = `${(m.y / c.height) * 100}%`;
    }
  }

  function objectAt(t) {
    let o = P.objects[0];
    for (const x of P.objects) if (x.start <= t) o = x;
    return o;
  }

  function render() {
    ui.position.value = String(Math.round(P.pos - P.start));
    setText(ui.clock, `${clock(P.pos - P.start)} / ${clock(P.end - P.start)}`);
    ui.play.textContent = P.playing ? 'Pause' : 'Play';
  }

  // Shows the screen as it was at time t: from the keyframe before t, every record up to t.
  async function seek(t) {
    const g = ++P.gen;
    ui.canvas.dataset.ready = 'false';
    t = Math.max(P.start, Math.min(P.end, t));
    const obj = objectAt(t);
    if (!obj) return;
    let offset = 0;
    for (const k of obj.keyframes) if (k.at_ms <= t) offset = k.offset;
    P.reader = new Reader(obj, offset);
    P.pending = null;
    // The end is known to the second only: "the end" means every record that is left.
    const all = t >= P.end;
    try {
      for (;;) {
        const rec = await P.reader.record();
        if (g !== P.gen) return;
        if (!rec) break;
        if (!all && rec.at > t) { P.pending = rec; break; }
        await apply(rec);
      }
    } catch (e) {
      showError(ui.status, e.message);
      return;
    }
    P.pos = t;
    render();
    ui.canvas.dataset.position = String(Math.round(t - P.start));
    ui.canvas.dataset.ready = 'true';
    if (P.playing) play(g);
  }

  function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

  async function play(g) {
    const speed = Number(ui.speed.value) || 1;
    const wall0 = performance.now();
    const t0 = P.pos;
    const now = () => t0 + (performance.now() - wall0) * speed;
    while (P.playing && g === P.gen) {
      let rec = P.pending;
      P.pending = null;
      if (!rec) {
        rec = await P.reader.record();
        if (g !== P.gen) return;
      }
      if (!rec) {
        const i = P.objects.indexOf(P.reader.obj);
        if (i + 1 < P.objects.length) {
          P.reader = new Reader(P.objects[i + 1], 0);
          continue;
        }
        P.playing = false;
        P.pos = P.end;
        render();
        return;
      }
      while (now() < rec.at && P.playing && g === P.gen) {
        P.pos = now();
        render();
        await sleep(Math.min(250, (rec.at - now()) / speed));
      }
      if (g !== P.gen || !P.playing) { P.pending = rec; return; }
      await apply(rec);
      P.pos = Math.max(P.pos, rec.at);
    }
  }

  function timelineText(e) {
    const who = str(e.name || e.by || e.who || e.from);
    switch (e.event) {
      case 'consent': {
        const c = e.consent || {};
        const on = Object.keys(c).filter((k) => c[k]);
        return `Customer allows: ${on.length ? on.join(', ') : 'nothing'}`;
      }
      case 'control.requested': return `${who} asked for control`;
      case 'control.released': return `${who} released control`;
      case 'control.on': return 'Control granted';
      case 'control.off': return 'Control ended';
      case 'screen.join': return `Screen ${e.who === 'customer' ? 'shared' : 'viewed by the agent'}`;
      case 'screen.leave': return `Screen ${e.who === 'customer' ? 'no longer shared' : 'no longer viewed'}`;
      case 'chat': return `${who || 'Someone'}: ${str(e.text)}`;
      case 'url': return `Link: ${str(e.url)}`;
      case 'note': return `Private note: ${str(e.text)}`;
      case 'file': return `File: ${str(e.name)}`;
      case 'screenshot': return `Agent took a screenshot: ${str(e.name)}`;
      case 'screen.resumed': return 'The customer\'s computer came back after its restart';
      case 'screen.rebooting': return 'The customer\'s computer restarts';
      case 'reboot.requested': return `${who} asked to restart the customer's computer`;
      case 'diagnostics': return 'Diagnostics received';
      case 'annotation': return e.op === 'clear' ? `${who} cleared the drawing` : `${who} drew on the screen`;
      default: return [str(e.event), who].filter(Boolean).join(' · ');
    }
  }

  async function open(e) {
    e.preventDefault();
    const id = ui.session.value.trim();
    if (!id) { showError(ui.openError, 'Enter a session id.'); return; }
    showError(ui.openError, '');
    P.playing = false;
    P.gen += 1;
    const reason = ui.reason.value.trim();
    let idx;
    try {
      idx = await api('GET', `${API}/sessions/${encodeURIComponent(id)}/recording${reason ? `?reason=${encodeURIComponent(reason)}` : ''}`);
    } catch (err) {
      showError(ui.openError, err.message);
      return;
    }
    P.id = id;
    P.ticket = str(idx.ticket);
    P.objects = (Array.isArray(idx.objects) ? idx.objects : []).filter((o) => o.state !== 'open').map((o) => ({
      object: str(o.object),
      start: Date.parse(o.created_at),
      end: Date.parse(o.closed_at || o.created_at),
      keyframes: Array.isArray(o.keyframes) ? o.keyframes : [],
    }));
    ui.player.hidden = false;
    const items = (Array.isArray(idx.timeline) ? idx.timeline : []).map((t) => {
      const li = el('li', 'timeline-item');
      const at = Date.parse(t.at);
      const b = el('button', 'link', `${P.objects.length ? clock(at - P.objects[0].start) : ''} ${timelineText(t)}`);
      b.type = 'button';
      b.addEventListener('click', () => seek(at));
      li.append(b);
      return li;
    });
    ui.timeline.replaceChildren(...items);
    if (!P.objects.length) {
      setText(ui.status, 'This session has no screen recording (the screen was never shared, or the portal does not record).');
      return;
    }
    P.start = Math.min(...P.objects.map((o) => o.start));
    P.end = Math.max(...P.objects.map((o) => o.end));
    ui.position.max = String(Math.round(P.end - P.start));
    setText(ui.status, `${P.objects.length} recording part(s), ${clock(P.end - P.start)} long.`);
    painter = new window.CustosPainter(ui.canvas);
    media = new window.CustosMediaView(ui.video, false);
    await seek(P.start);
  }

  function show(which, message) {
    ui.boot.hidden = true;
    ui.login.hidden = which !== 'login';
    ui.review.hidden = which !== 'review';
    if (which === 'login') {
      showError(ui.loginError, message || '');
      ui.loginName.focus();
    }
  }

  function start(me) {
    setText(ui.whoami, str(me.name));
    show('review');
    const q = new URLSearchParams(location.search).get('session');
    if (q) ui.session.value = q;
  }

  async function onLogin(e) {
    e.preventDefault();
    const name = ui.loginName.value.trim();
    const password = ui.loginPassword.value;
    if (!name || !password) { showError(ui.loginError, 'Enter your name and password.'); return; }
    ui.loginSubmit.disabled = true;
    try {
      const r = await api('POST', `${API}/auth/login`, { name, password }, { noAuthRedirect: true });
      ui.loginPassword.value = '';
      if (r.password_change_required) {
        show('login', 'Your password must be changed first: sign in at /agent and choose a new one.');
        return;
      }
      start({ name: (r.user && r.user.name) || name });
    } catch (err) {
      showError(ui.loginError, err.message);
    } finally {
      ui.loginSubmit.disabled = false;
    }
  }

  async function boot() {
    const ids = {
      boot: 'boot', login: 'login', loginForm: 'login-form', loginName: 'login-name',
      loginPassword: 'login-password', loginSubmit: 'login-submit', loginError: 'login-error',
      review: 'review', whoami: 'whoami', openForm: 'open-form', session: 'session', reason: 'reason',
      openError: 'open-error', player: 'player', status: 'player-status', play: 'play', toEnd: 'to-end',
      speed: 'speed', position: 'position', clock: 'clock', canvas: 'canvas', cursor: 'cursor', timeline: 'timeline',
      video: 'video',
    };
    for (const [k, id] of Object.entries(ids)) ui[k] = document.getElementById(id);
    ui.loginForm.addEventListener('submit', onLogin);
    ui.openForm.addEventListener('submit', open);
    ui.play.addEventListener('click', () => {
      P.playing = !P.playing;
      render();
      if (P.playing) {
        if (P.pos >= P.end) seek(P.start); else play(++P.gen);
      }
    });
    ui.toEnd.addEventListener('click', () => { P.playing = false; seek(P.end); });
    ui.speed.addEventListener('change', () => { if (P.playing) play(++P.gen); });
    ui.position.addEventListener('change', () => seek(P.start + Number(ui.position.value)));
    setAuthFailureHandler((status) => {
      if (status === 401) show('login', 'Your sign-in has expired. Please sign in again.');
    });
    try {
      start(await api('GET', `${API}/me`, undefined, { noAuthRedirect: true }));
    } catch {
      show('login', '');
    }
  }

  document.addEventListener('DOMContentLoaded', boot);
})();
