// Custos pages' shared script: small helpers, the API wrapper, the session socket, typing
// notices, the message list and file transfer, used by the customer page and the agent console
// (each loads this first). Plain ES2020, no dependencies. Everything that comes from the network
// is inserted with textContent; links get an href only when they start with http:// or https://.
'use strict';

window.CustosCommon = (() => {
  // What a page does when the server says it is not (or no longer) signed in: nothing, unless
  // the page sets a handler.
  let onAuthFailure = () => {};
  function setAuthFailureHandler(f) {
    onAuthFailure = f;
  }


  const $ = (sel, root = document) => root.querySelector(sel);
  const API = '/api/v1';
  const CHAT_MAX = 4000;

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function str(v) {
    return v === undefined || v === null ? '' : String(v);
  }

  function pad2(n) {
    return String(n).padStart(2, '0');
  }

  function fmtTime(at) {
    const d = at ? new Date(at) : new Date();
    if (Number.isNaN(d.getTime())) return '';
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }

  function fmtSize(n) {
    const b = Number(n);
    if (!Number.isFinite(b) || b < 0) return '';
    if (b < 1024) return `${b} B`;
    const units = ['KiB', 'MiB', 'GiB', 'TiB'];
    let v = b / 1024;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
  }

  function fmtWaited(s) {
    const v = Math.max(0, Math.floor(Number(s) || 0));
    if (v < 60) return `${v} s`;
    if (v < 3600) return `${Math.floor(v / 60)} min`;
    return `${Math.floor(v / 3600)} h ${Math.floor((v % 3600) / 60)} min`;
  }

  function safeHref(url) {
    return typeof url === 'string' && /^https?:\/\//i.test(url) ? url : null;
  }

  function charCount(s) {
    return [...s].length;
  }

  function newId() {
    if (window.crypto && typeof window.crypto.randomUUID === 'function') return window.crypto.randomUUID();
    const b = new Uint8Array(16);
    window.crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  function toSeq(v) {
    const n = Number(v);
    return v !== undefined && v !== null && v !== '' && Number.isInteger(n) ? n : null;
  }

  function showError(node, message) {
    node.textContent = message ? String(message) : '';
  }

  // Writes only on change, so that live regions do not repeat themselves.
  function setText(node, text) {
    const t = str(text);
    if (node.textContent !== t) node.textContent = t;
  }

  // Fetch wrapper: same-origin cookies, the (harmless) CSRF header on every non-GET, JSON both
  // ways, and the contract's error body turned into an ApiError carrying its message. A 401 or
  // 403 goes to the page's auth-failure handler first, unless `opts.noAuthRedirect`.
  async function api(method, path, body, opts = {}) {
    const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (method !== 'GET') init.headers['X-Custos-CSRF'] = '1';
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (_) {
      throw new ApiError(0, 'network', 'Cannot reach the server. Check the connection and try again.');
    }
    let data = null;
    const text = await res.text().catch(() => '');
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    if (!res.ok) {
      const e = (data && typeof data === 'object' && data.error) || {};
      const err = new ApiError(res.status, str(e.code) || `http_${res.status}`,
        str(e.message) || `The request failed (HTTP ${res.status}).`);
      if (!opts.noAuthRedirect) onAuthFailure(res.status, err);
      throw err;
    }
    return data || {};
  }

  // ---------------------------------------------------------------------------------------------
  // One WebSocket per session: reconnects with backoff (1, 2, 4, 8, 10 s…) until stopped, and
  // pings every 20 s while open.

  class SessionSocket {
    constructor(sessionId, onMessage, onState) {
      this.id = sessionId;
      this.onMessage = onMessage;
      this.onState = onState;
      this.ws = null;
      this.stopped = true;
      this.attempt = 0;
      this.failures = 0;
      this.retryTimer = null;
      this.pingTimer = null;
      this.gen = 0; // counts connections, to tell which pending messages went out on this one
    }

    url() {
      return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host +
        '/api/v1/sessions/' + encodeURIComponent(this.id) + '/ws';
    }

    start() {
      this.stopped = false;
      this.attempt = 0;
      this.failures = 0;
      this.connect();
    }

    connect() {
      if (this.stopped) return;
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.gen += 1;
      let ws;
      try {
        ws = new WebSocket(this.url());
      } catch (_) {
        this.scheduleRetry();
        return;
      }
      this.ws = ws;
      this.onState('connecting');
      ws.onopen = () => {
        if (this.ws !== ws) return;
        this.startPing();
        this.onState('open');
      };
      ws.onmessage = (ev) => {
        if (this.ws !== ws || typeof ev.data !== 'string') return;
        let m;
        try { m = JSON.parse(ev.data); } catch (_) { return; }
        if (!m || typeof m !== 'object' || typeof m.type !== 'string') return;
        if (m.type === 'hello') { this.attempt = 0; this.failures = 0; }
        this.onMessage(m);
      };
      ws.onclose = () => {
        if (this.ws !== ws) return;
        this.ws = null;
        this.stopPing();
        if (this.stopped) return;
        this.failures += 1;
        this.scheduleRetry();
      };
      ws.onerror = () => { /* a close event follows */ };
    }

    scheduleRetry() {
      if (this.stopped) return;
      const delays = [1000, 2000, 4000, 8000, 10000];
      const delay = delays[Math.min(this.attempt, delays.length - 1)];
      this.attempt += 1;
      this.onState('retry', delay);
      this.retryTimer = setTimeout(() => this.connect(), delay);
    }

    isOpen() {
      return !!this.ws && this.ws.readyState === WebSocket.OPEN;
    }

    send(obj) {
      if (!this.isOpen()) return false;
      try {
        this.ws.send(JSON.stringify(obj));
        return true;
      } catch (_) {
        return false;
      }
    }

    startPing() {
      this.stopPing();
      this.pingTimer = setInterval(() => this.send({ type: 'ping' }), 20000);
    }

    stopPing() {
      clearInterval(this.pingTimer);
      this.pingTimer = null;
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.stopPing();
      const ws = this.ws;
      this.ws = null;
      if (ws) {
        try { ws.close(1000); } catch (_) { /* already closing */ }
      }
    }
  }

  // Outgoing typing indicator: "on" at most once per 2 s while typing, "off" after 3 s idle or
  // when the message is sent.
  class TypingSender {
    constructor(send) {
      this.send = send;
      this.on = false;
      this.lastOn = 0;
      this.idle = null;
    }

    input() {
      const now = Date.now();
      if (!this.on || now - this.lastOn >= 2000) {
        if (this.send({ type: 'typing', on: true })) {
          this.on = true;
          this.lastOn = now;
        }
      }
      clearTimeout(this.idle);
      this.idle = setTimeout(() => this.stop(), 3000);
    }

    stop() {
      clearTimeout(this.idle);
      this.idle = null;
      if (this.on) {
        this.on = false;
        this.send({ type: 'typing', on: false });
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // The message list of one conversation: ordered by seq, deduplicated by seq (history after a
  // reconnect), with pending own messages reconciled by client id (chat) or content (url, note).

  class MessageList {
    constructor(ol, opts) {
      this.ol = ol;
      this.opts = opts; // { ownFrom, who(m, kind) → string, onFile(m), onSensitive(seq, button) }
      this.bySeq = new Map();
      this.sensitive = new Set(); // seqs of chat messages marked sensitive
      this.pending = new Map(); // client id → { li, text, gen: connection it went out on, or -1 }
      this.pendingOther = []; // { kind, key, li }
    }

    nearBottom() {
      const o = this.ol;
      return o.scrollHeight - o.scrollTop - o.clientHeight < 48;
    }

    scroll(wasNear) {
      if (wasNear) this.ol.scrollTop = this.ol.scrollHeight;
    }

    build(from, who, at) {
      const li = el('li', 'msg');
      li.dataset.from = from;
      const head = el('div', 'meta');
      head.append(el('span', 'who', who));
      const t = el('time', 'time', fmtTime(at));
      if (at) t.dateTime = str(at);
      head.append(t);
      head.append(el('span', 'state'));
      li.append(head);
      li.append(el('div', 'text'));
      return li;
    }

    setMeta(li, who, at) {
      $('.who', li).textContent = who;
      const t = $('.time', li);
      t.textContent = fmtTime(at);
      if (at) t.dateTime = str(at);
    }

    setState(li, text, title) {
      const s = $('.state', li);
      s.textContent = text;
      // "sending…" and "✓" would make every message announce twice; a failure is worth hearing.
      s.setAttribute('aria-hidden', text === 'not sent' ? 'false' : 'true');
      if (title) s.title = title; else s.removeAttribute('title');
    }

    // Puts li at its seq position: before the first later message or pending message. Messages
    // without seq (notices, files) stay where they arrived.
    place(li, seq) {
      if (seq !== null) {
        li.dataset.seq = String(seq);
        this.bySeq.set(seq, li);
      }
      const near = this.nearBottom();
      if (li.parentNode === this.ol) {
        if (seq === null || this.inOrder(li, seq)) return;
        li.remove();
      }
      let before = null;
      if (seq !== null) {
        before = Array.from(this.ol.children).find((k) => (k.dataset.seq !== undefined ?
          Number(k.dataset.seq) > seq : k.classList.contains('pending'))) || null;
      }
      this.ol.insertBefore(li, before);
      this.scroll(near);
    }

    // Whether li sits between its nearest neighbours that have a seq.
    inOrder(li, seq) {
      let p = li.previousElementSibling;
      while (p && p.dataset.seq === undefined) p = p.previousElementSibling;
      let n = li.nextElementSibling;
      while (n && n.dataset.seq === undefined) n = n.nextElementSibling;
      return (!p || Number(p.dataset.seq) < seq) && (!n || Number(n.dataset.seq) > seq);
    }

    system(text, at) {
      const li = this.build('system', 'Notice', at);
      $('.text', li).textContent = text;
      this.place(li, null);
      return li;
    }

    // Own chat message shown before the server has it.
    addPending(text, who) {
      const id = newId();
      const li = this.build(this.opts.ownFrom, who, null);
      li.classList.add('pending');
      li.dataset.clientId = id;
      $('.text', li).textContent = text;
      this.setState(li, 'sending…');
      this.place(li, null);
      this.pending.set(id, { li, text, gen: -1 });
      return id;
    }

    addPendingOther(kind, key, who, fill) {
      const li = this.build(kind, who, null);
      li.classList.add('pending');
      fill($('.text', li));
      this.setState(li, 'sending…');
      this.place(li, null);
      this.pendingOther.push({ kind, key, li });
      return li;
    }

    takePendingOther(kind, key) {
      const i = this.pendingOther.findIndex((p) => p.kind === kind && p.key === key);
      if (i < 0) return null;
      const p = this.pendingOther[i];
      this.pendingOther.splice(i, 1);
      return p.li;
    }

    settle(li) {
      if (!li.classList.contains('pending')) return;
      li.classList.remove('pending');
      this.setState(li, '');
    }

    // Returns true when something new was shown.
    ingest(m) {
      switch (m.type) {
        case 'chat': return this.chat(m);
        case 'url': return this.url(m);
        case 'note': return this.note(m);
        case 'file': return this.file(m);
        case 'sensitive': return this.markSensitive(m);
        default: return false;
      }
    }

    chat(m) {
      const seq = toSeq(m.seq);
      const cid = typeof m.id === 'string' && m.id ? m.id : null;
      let li = seq !== null ? this.bySeq.get(seq) : null;
      let fresh = false;
      let mine = cid && this.pending.has(cid) ? cid : null;
      if (!li && !mine && !cid && m.from === this.opts.ownFrom) {
        // The history carries no client ids: an own message the server already has (its echo
        // was lost with the connection) is recognised by its text, so it is not sent twice.
        for (const [id, p] of this.pending) {
          if (p.text === str(m.text)) { mine = id; break; }
        }
      }
      if (!li && mine) li = this.pending.get(mine).li;
      if (!li) {
        li = this.build(m.from === 'agent' ? 'agent' : 'customer', '', m.at);
        fresh = true;
      }
      li.dataset.from = m.from === 'agent' ? 'agent' : 'customer';
      this.setMeta(li, this.opts.who(m, 'chat'), m.at);
      $('.text', li).textContent = str(m.text);
      if (mine) {
        this.pending.delete(mine);
        this.settle(li);
      }
      this.place(li, seq);
      this.decorate(li, seq, m);
      return fresh;
    }

    // Chat extras: the note on items the server masked, the sensitive state, and (agent) the
    // button that marks the message as sensitive.
    // m is null when only the seq became known (an ack before the echo).
    decorate(li, seq, m) {
      if ((m && m.sensitive === true) || (seq !== null && this.sensitive.has(seq))) {
        if (seq !== null) this.sensitive.add(seq);
        this.showSensitive(li);
        return;
      }
      if (m) {
        const old = $('.masked-note', li);
        if (old) old.remove();
        const k = Number(m.masked);
        if (Number.isInteger(k) && k > 0) $('.text', li).after(el('p', 'masked-note', `(${k} item(s) masked)`));
      }
      if (this.opts.onSensitive && seq !== null && !li.classList.contains('sensitive') && !$('.mark-sensitive', li)) {
        const b = el('button', 'mark-sensitive', 'Mark sensitive');
        b.type = 'button';
        b.setAttribute('aria-label', 'Mark this message as sensitive');
        b.addEventListener('click', () => {
          const n = toSeq(li.dataset.seq);
          if (n !== null) this.opts.onSensitive(n, b);
        });
        li.append(b);
      }
    }

    showSensitive(li) {
      $('.text', li).textContent = '[marked sensitive]';
      li.classList.add('sensitive');
      const note = $('.masked-note', li);
      if (note) note.remove();
      const b = $('.mark-sensitive', li);
      if (b) b.remove();
    }

    // A `sensitive` record (live or in the history): idempotent, and remembered for a chat that
    // is shown later.
    markSensitive(m) {
      const target = toSeq(m.target);
      if (target === null) return false;
      this.sensitive.add(target);
      const li = this.bySeq.get(target);
      if (li && (li.dataset.from === 'agent' || li.dataset.from === 'customer')) this.showSensitive(li);
      return false;
    }

    ack(m) {
      const cid = typeof m.id === 'string' ? m.id : null;
      const seq = toSeq(m.seq);
      let li = null;
      if (cid) li = this.ol.querySelector(`li[data-client-id="${CSS.escape(cid)}"]`);
      if (!li && seq !== null) li = this.bySeq.get(seq) || null;
      if (!li) return;
      if (cid) this.pending.delete(cid);
      li.classList.add('acked');
      this.settle(li);
      this.setState(li, '✓', 'Saved in the session record');
      if (seq !== null && li.dataset.seq === undefined) {
        this.place(li, seq);
        if (li.dataset.from === 'agent' || li.dataset.from === 'customer') this.decorate(li, seq, null);
      }
    }

    fillLink(node, url, title) {
      node.textContent = '';
      const href = safeHref(url);
      const label = str(title) || str(url);
      if (href) {
        const a = el('a', 'pushed-link', label);
        a.href = href;
        a.rel = 'noopener noreferrer';
        a.target = '_blank';
        node.append(a);
      } else {
        node.textContent = label;
      }
    }

    url(m) {
      const seq = toSeq(m.seq);
      let li = seq !== null ? this.bySeq.get(seq) : null;
      let fresh = false;
      if (!li) li = this.takePendingOther('url', str(m.url));
      if (!li) { li = this.build('url', '', m.at); fresh = true; }
      li.dataset.from = 'url';
      this.setMeta(li, this.opts.who(m, 'url'), m.at);
      this.fillLink($('.text', li), m.url, m.title);
      this.settle(li);
      this.place(li, seq);
      return fresh;
    }

    note(m) {
      const seq = toSeq(m.seq);
      let li = seq !== null ? this.bySeq.get(seq) : null;
      let fresh = false;
      if (!li) li = this.takePendingOther('note', str(m.text));
      if (!li) { li = this.build('note', '', m.at); fresh = true; }
      li.dataset.from = 'note';
      this.setMeta(li, this.opts.who(m, 'note'), m.at);
      $('.text', li).textContent = str(m.text);
      this.settle(li);
      this.place(li, seq);
      return fresh;
    }

    file(m) {
      const fid = str(m.file_id);
      const seq = toSeq(m.seq);
      if (this.opts.onFile) this.opts.onFile(m);
      let li = seq !== null ? this.bySeq.get(seq) : null;
      if (!li && fid) li = this.ol.querySelector(`li[data-file-id="${CSS.escape(fid)}"]`);
      const fresh = !li;
      if (!li) li = this.build('file', '', m.at);
      li.dataset.fileId = fid;
      this.setMeta(li, this.opts.who(m, 'file'), m.at);
      const size = fmtSize(m.size);
      $('.text', li).textContent = `sent a file: ${str(m.name)}${size ? ` (${size})` : ''}`;
      if (fresh || seq !== null) this.place(li, seq);
      return fresh;
    }

    // After a reconnect: pending chat messages not in the history are sent again.
    unsent(gen) {
      return Array.from(this.pending.entries()).filter(([, p]) => p.gen !== gen).map(([id, p]) => ({ id, text: p.text, entry: p }));
    }

    clearPendingOther() {
      for (const p of this.pendingOther) {
        p.li.classList.remove('pending');
        p.li.classList.add('failed');
        this.setState(p.li, 'not sent');
      }
      this.pendingOther = [];
    }
  }

  function fileItem(sessionId, f) {
    const fid = str(f.file_id);
    const li = el('li', 'file');
    li.dataset.fileId = fid;
    const top = el('div', 'file-top');
    top.append(el('span', 'file-name', str(f.name) || 'file'));
    const size = fmtSize(f.size);
    if (size) top.append(el('span', 'file-size', size));
    const a = el('a', 'download', 'Download');
    a.href = `${API}/sessions/${encodeURIComponent(sessionId)}/files/${encodeURIComponent(fid)}`;
    a.setAttribute('aria-label', `Download ${str(f.name) || 'file'}`);
    top.append(a);
    li.append(top);
    const sum = el('p', 'file-sum');
    sum.append(el('span', 'hint', 'SHA-256 '));
    sum.append(el('code', 'sha256', str(f.sha256)));
    li.append(sum);
    return li;
  }

  function addFile(ul, sessionId, f) {
    const fid = str(f.file_id);
    if (!fid || ul.querySelector(`li[data-file-id="${CSS.escape(fid)}"]`)) return;
    ul.append(fileItem(sessionId, f));
  }

  // XHR upload with progress; resolves with the JSON answer or rejects with an ApiError.
  function uploadFile(sessionId, file, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', `${API}/sessions/${encodeURIComponent(sessionId)}/files?name=${encodeURIComponent(file.name)}`);
      xhr.setRequestHeader('X-Custos-CSRF', '1');
      xhr.setRequestHeader('Content-Type', 'application/octet-stream');
      xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); };
      xhr.onload = () => {
        let data = null;
        try { data = JSON.parse(xhr.responseText); } catch (_) { data = null; }
        if (xhr.status >= 200 && xhr.status < 300) {
          resolve(data || {});
          return;
        }
        const e = (data && data.error) || {};
        if (xhr.status === 401) onAuthFailure(401, new ApiError(401, str(e.code), str(e.message)));
        reject(new ApiError(xhr.status, str(e.code) || `http_${xhr.status}`,
          str(e.message) || (xhr.status === 413 ? 'The file is too large.' : `The upload failed (HTTP ${xhr.status}).`)));
      };
      xhr.onerror = () => reject(new ApiError(0, 'network', 'The upload failed: the server could not be reached.'));
      xhr.send(file);
    });
  }

  return Object.freeze({
    $, API, CHAT_MAX, el, str, fmtTime, fmtWaited, safeHref, charCount, toSeq, showError, setText,
    api, SessionSocket, TypingSender, MessageList, addFile, uploadFile, setAuthFailureHandler,
  });
})();
