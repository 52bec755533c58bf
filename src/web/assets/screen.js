// The agent's live view of a customer's screen (docs/formats/recording.md): draws the tiles the
// native client sends on a canvas, and while the customer allows control, sends pointer and
// keyboard events. Used by the agent console (agent.js); needs nothing but the browser.
(function () {
  'use strict';

  const VERSION = 1;
  const KIND_UPDATE = 1;
  const KIND_CURSOR = 2;
  const KIND_MEDIA = 3;
  const MOVE_EVERY_MS = 16;
  const SPECIAL = {
    'Ctrl+Alt+Del': ['Control', 'Alt', 'Delete'],
    'Alt+Tab': ['Alt', 'Tab'],
    'Alt+F4': ['Alt', 'F4'],
    'Escape': ['Escape'],
    'Print Screen': ['PrintScreen'],
    'Super': ['Meta'],
  };

  async function inflate(bytes) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate-raw'));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  // Parses one binary screen message; throws on anything malformed (the relay has checked
  // the structure already; this is a second line).
  function parse(buf) {
    const d = new DataView(buf);
    if (d.byteLength < 2 || d.getUint8(0) !== VERSION) throw new Error('bad screen message');
    const kind = d.getUint8(1);
    if (kind === KIND_CURSOR) return { kind, x: d.getUint16(4, true), y: d.getUint16(6, true) };
    if (kind !== KIND_UPDATE) throw new Error('unknown screen message');
    const m = {
      kind, flags: d.getUint8(2), frame: d.getUint32(4, true),
      width: d.getUint16(8, true), height: d.getUint16(10, true), tiles: [],
    };
    const n = d.getUint16(12, true);
    let at = 14;
    for (let i = 0; i < n; i++) {
      const t = {
        x: d.getUint16(at, true), y: d.getUint16(at + 2, true),
        w: d.getUint16(at + 4, true), h: d.getUint16(at + 6, true),
        codec: d.getUint8(at + 8), len: d.getUint32(at + 10, true),
      };
      at += 14;
      if (at + t.len > d.byteLength) throw new Error('truncated screen message');
      t.data = new Uint8Array(buf, at, t.len);
      at += t.len;
      m.tiles.push(t);
    }
    return m;
  }

  // Plays a browser's screen share (WebM chunks) in a <video> through Media Source Extensions.
  // A chunk flagged START begins a new stream: the player starts over.
  class MediaView {
    constructor(video, live) {
      this.video = video;
      this.live = live;
      this.ms = null;
      this.sb = null;
      this.queue = [];
      this.url = null;
    }

    push(buf) {
      const d = new Uint8Array(buf);
      if (d.length < 5 || d[0] !== VERSION || d[1] !== KIND_MEDIA) return;
      if (d[2] & 1) this.reset();
      if (!this.ms) return; // joined mid-stream: wait for the next start
      this.queue.push(d.slice(4));
      this.pump();
    }

    reset() {
      if (this.url) URL.revokeObjectURL(this.url);
      this.ms = new MediaSource();
      this.sb = null;
      this.queue = [];
      this.url = URL.createObjectURL(this.ms);
      this.video.src = this.url;
      const ms = this.ms;
      ms.addEventListener('sourceopen', () => {
        if (ms !== this.ms) return;
        this.sb = ms.addSourceBuffer('video/webm; codecs="vp9"');
        this.sb.mode = 'sequence';
        this.sb.addEventListener('updateend', () => this.pump());
        this.pump();
      });
      this.video.play().catch(() => {});
    }

    pump() {
      if (!this.sb || this.sb.updating || !this.queue.length) return;
      try {
        this.sb.appendBuffer(this.queue.shift());
      } catch (e) {
        console.warn(e);
        return;
      }
      // Live: stay near the newest picture.
      const b = this.video.buffered;
      if (this.live && b.length && b.end(b.length - 1) - this.video.currentTime > 2) {
        this.video.currentTime = b.end(b.length - 1) - 0.2;
      }
    }
  }

  function kindOf(buf) {
    const d = new Uint8Array(buf, 0, Math.min(2, buf.byteLength));
    return d.length === 2 ? d[1] : 0;
  }

  // Draws parsed updates on a canvas, in order.
  class Painter {
    constructor(canvas) {
      this.canvas = canvas;
      this.ctx = canvas.getContext('2d');
      this.chain = Promise.resolve();
      this.frames = 0;
    }

    push(buf, onDrawn) {
      this.chain = this.chain.then(() => this.apply(buf)).then(onDrawn, (e) => console.warn(e));
    }

    async apply(buf) {
      const m = parse(buf);
      if (m.kind === KIND_CURSOR) return m;
      if (this.canvas.width !== m.width || this.canvas.height !== m.height) {
        this.canvas.width = m.width;
        this.canvas.height = m.height;
      }
      const pixels = await Promise.all(m.tiles.map((t) => {
        if (t.codec === 1) return inflate(t.data);
        if (t.codec === 2) return createImageBitmap(new Blob([t.data], { type: 'image/jpeg' }));
        return t.data;
      }));
      m.tiles.forEach((t, i) => {
        if (t.codec === 2) {
          this.ctx.drawImage(pixels[i], t.x, t.y, t.w, t.h);
          pixels[i].close();
          return;
        }
        const rgb = pixels[i];
        if (rgb.length !== t.w * t.h * 3) throw new Error('tile size mismatch');
        const img = this.ctx.createImageData(t.w, t.h);
        const out = img.data;
        for (let s = 0, o = 0; s < rgb.length; s += 3, o += 4) {
          out[o] = rgb[s]; out[o + 1] = rgb[s + 1]; out[o + 2] = rgb[s + 2]; out[o + 3] = 255;
        }
        this.ctx.putImageData(img, t.x, t.y);
      });
      if (m.flags & 2) this.frames += 1;
      return m;
    }
  }

  class ScreenView {
    constructor(root, sessionId) {
      const q = (c) => root.querySelector(c);
      this.id = sessionId;
      this.e = {
        status: q('.screen-status'), control: q('.screen-control'), fit: q('.screen-fit'),
        cad: q('.screen-cad'), keys: q('.screen-keys'), sendKeys: q('.screen-send-keys'),
        reboot: q('.screen-reboot'), shot: q('.screen-shot'),
        draw: q('.screen-draw'), ink: q('.screen-ink'), clear: q('.screen-clear'),
        wrap: q('.screen-wrap'), canvas: q('.screen-canvas'), cursor: q('.screen-cursor'),
        video: q('.screen-video'),
      };
      this.painter = new Painter(this.e.canvas);
      this.media = new MediaView(this.e.video, true);
      this.sharer = false;
      this.consent = {};
      this.control = false;
      this.requested = false;
      this.note = '';
      this.drawing = false;
      this.stroke = null;
      this.lastMove = 0;
      this.stopped = false;
      this.retry = null;
      this.wire();
      this.connect();
    }

    wire() {
      const e = this.e;
      e.control.addEventListener('click', () => this.send({ type: 'control', on: !this.requested }));
      e.fit.addEventListener('click', () => {
        const fit = e.fit.getAttribute('aria-pressed') !== 'true';
        e.fit.setAttribute('aria-pressed', String(fit));
        e.fit.textContent = fit ? 'Fit (on)' : 'Fit (off: 1:1)';
        e.wrap.classList.toggle('one-to-one', !fit);
      });
      e.cad.addEventListener('click', () => this.combo(SPECIAL['Ctrl+Alt+Del']));
      e.reboot.addEventListener('click', () => this.send({ type: 'reboot' }));
      e.shot.addEventListener('click', () => this.screenshot());
      e.draw.addEventListener('click', () => this.setDrawing(!this.drawing));
      e.clear.addEventListener('click', () => this.send({ type: 'annotate', op: 'clear' }));
      for (const name of Object.keys(SPECIAL)) {
        const o = document.createElement('option');
        o.value = name;
        o.textContent = name;
        e.keys.append(o);
      }
      e.sendKeys.addEventListener('click', () => { if (SPECIAL[e.keys.value]) this.combo(SPECIAL[e.keys.value]); });
      const c = e.canvas;
      c.addEventListener('mousemove', (ev) => {
        if (this.drawing) {
          if (this.stroke && this.stroke.length < 1000) {
            const p = this.point(ev);
            const last = this.stroke[this.stroke.length - 1];
            if (Math.abs(p.x - last[0]) + Math.abs(p.y - last[1]) >= 3) this.stroke.push([p.x, p.y]);
          }
          return;
        }
        const now = performance.now();
        if (!this.control || now - this.lastMove < MOVE_EVERY_MS) return;
        this.lastMove = now;
        this.send({ type: 'input', e: 'move', ...this.point(ev) });
      });
      const button = (ev, down) => {
        if (this.drawing) {
          ev.preventDefault();
          if (ev.button !== 0) return;
          const p = this.point(ev);
          if (down) this.stroke = [[p.x, p.y]];
          else if (this.stroke) {
            this.stroke.push([p.x, p.y]);
            this.send({ type: 'annotate', op: 'stroke', points: this.stroke.slice(0, 1000), color: e.ink.value });
            this.stroke = null;
          }
          return;
        }
        if (!this.control) return;
        ev.preventDefault();
        c.focus();
        const b = ({ 0: 1, 1: 2, 2: 3 })[ev.button];
        if (b) this.send({ type: 'input', e: 'button', button: b, down, ...this.point(ev) });
      };
      c.addEventListener('mousedown', (ev) => button(ev, true));
      c.addEventListener('mouseup', (ev) => button(ev, false));
      c.addEventListener('contextmenu', (ev) => { if (this.control) ev.preventDefault(); });
      c.addEventListener('wheel', (ev) => {
        if (!this.control) return;
        ev.preventDefault();
        const b = ev.deltaY < 0 ? 4 : ev.deltaY > 0 ? 5 : ev.deltaX < 0 ? 6 : 7;
        const p = this.point(ev);
        this.send({ type: 'input', e: 'button', button: b, down: true, ...p });
        this.send({ type: 'input', e: 'button', button: b, down: false, ...p });
      }, { passive: false });
      const key = (ev, down) => {
        if (!this.control || ev.isComposing) return;
        ev.preventDefault();
        this.send({ type: 'input', e: 'key', key: ev.key, down });
      };
      c.addEventListener('keydown', (ev) => key(ev, true));
      c.addEventListener('keyup', (ev) => key(ev, false));
    }

    setDrawing(on) {
      this.drawing = on;
      this.stroke = null;
      this.e.draw.setAttribute('aria-pressed', String(on));
      this.e.draw.textContent = on ? 'Draw (on)' : 'Draw';
      this.e.canvas.classList.toggle('drawing', on);
    }

    // Saves what the agent sees now as a PNG in the session's files (shown only to the agent).
    async screenshot() {
      let src = this.e.canvas;
      if (!this.e.video.hidden) {
        const v = this.e.video;
        src = document.createElement('canvas');
        src.width = v.videoWidth;
        src.height = v.videoHeight;
        src.getContext('2d').drawImage(v, 0, 0);
      }
      this.e.shot.disabled = true;
      try {
        const blob = await new Promise((resolve) => src.toBlob(resolve, 'image/png'));
        const name = `screenshot-${new Date().toISOString().replace(/[:.]/g, '-')}.png`;
        const res = await fetch(`/api/v1/sessions/${encodeURIComponent(this.id)}/files?name=${encodeURIComponent(name)}&screenshot=true`, {
          method: 'POST', credentials: 'same-origin', body: blob,
          headers: { 'X-Custos-CSRF': '1', 'Content-Type': 'application/octet-stream' },
        });
        setText(this.e.status, res.ok ? `Screenshot saved with the session's files (${name}).` : `The screenshot was not saved (HTTP ${res.status}).`);
      } catch (err) {
        setText(this.e.status, `The screenshot was not saved: ${err.message}`);
      } finally {
        this.e.shot.disabled = !this.seen;
      }
    }

    point(ev) {
      const c = this.e.canvas;
      const r = c.getBoundingClientRect();
      const x = Math.floor((ev.clientX - r.left) * c.width / r.width);
      const y = Math.floor((ev.clientY - r.top) * c.height / r.height);
      return { x: Math.max(0, Math.min(c.width - 1, x)), y: Math.max(0, Math.min(c.height - 1, y)) };
    }

    combo(keys) {
      if (!this.control) return;
      for (const k of keys) this.send({ type: 'input', e: 'key', key: k, down: true });
      for (const k of [...keys].reverse()) this.send({ type: 'input', e: 'key', key: k, down: false });
    }

    send(o) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(o));
    }

    connect() {
      if (this.stopped) return;
      const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host +
        '/api/v1/sessions/' + encodeURIComponent(this.id) + '/screen');
      ws.binaryType = 'arraybuffer';
      this.ws = ws;
      ws.onmessage = (ev) => {
        if (typeof ev.data !== 'string') {
          if (kindOf(ev.data) === KIND_MEDIA) {
            this.e.canvas.hidden = true;
            this.e.video.hidden = false;
            this.media.push(ev.data);
            if (!this.seen) { this.seen = true; this.render(); }
            return;
          }
          this.e.canvas.hidden = false;
          this.e.video.hidden = true;
          this.painter.push(ev.data, (m) => this.drawn(m));
          return;
        }
        let m;
        try { m = JSON.parse(ev.data); } catch (_) { return; }
        this.onMessage(m);
      };
      ws.onclose = () => {
        this.ws = null;
        this.sharer = false;
        this.control = false;
        this.requested = false;
        this.render();
        if (!this.stopped) this.retry = setTimeout(() => this.connect(), 3000);
      };
    }

    drawn(m) {
      if (!m) return;
      if (m.kind === KIND_CURSOR) {
        const c = this.e.canvas;
        this.e.cursor.hidden = false;
        this.e.cursor.style.left = `${(m.x / c.width) * 100}%`;
        this.e.cursor.style.top = `${(m.y / c.height) * 100}%`;
        return;
      }
      this.e.canvas.dataset.frames = String(this.painter.frames);
      if (!this.seen) {
        this.seen = true;
        this.render();
      }
    }

    onMessage(m) {
      switch (m.type) {
        case 'hello':
          this.sharer = !!m.sharer;
          this.consent = m.consent || {};
          this.control = !!m.control;
          break;
        case 'sharer':
          this.sharer = !!m.on;
          this.note = m.on ? (m.resumed ? 'The customer\'s computer is back after its restart. ' : '') :
            (m.rebooting ? 'The customer\'s computer is restarting; the client rejoins by itself. ' : '');
          if (!m.on) { this.seen = false; this.control = false; this.requested = false; }
          break;
        case 'consent': this.consent = m.consent || {}; this.control = !!m.control; break;
        case 'control':
          this.control = !!m.on;
          if (typeof m.requested === 'boolean') this.requested = m.requested;
          break;
        case 'error': setText(this.e.status, m.message || 'Refused'); return;
        default: return;
      }
      this.render();
    }

    render() {
      const e = this.e;
      const allowed = Object.keys(this.consent).filter((k) => this.consent[k]);
      let text;
      if (!this.sharer) text = this.note || 'The customer\'s screen is not shared (they join with the Custos client and the connection code).';
      else if (!this.consent.view) text = 'The customer has not allowed viewing their screen.';
      else if (this.control) text = 'You control the customer\'s screen. Click the screen, then type.';
      else if (this.requested) text = 'Control requested: waiting for the customer to allow it.';
      else text = `${this.note || ''}${this.seen ? 'Viewing the customer\'s screen.' : 'Waiting for the first picture…'}`;
      setText(e.status, `${text} Customer allows: ${allowed.length ? allowed.join(', ') : 'nothing'}.`);
      e.status.dataset.control = String(this.control);
      e.control.disabled = !this.sharer;
      e.control.textContent = this.requested ? 'Release control' : 'Request control';
      e.cad.disabled = !this.control;
      e.sendKeys.disabled = !this.control;
      e.reboot.disabled = !(this.sharer && this.consent.reboot);
      e.shot.disabled = !(this.sharer && this.seen);
      const canDraw = this.sharer && this.consent.view && this.seen && !this.e.canvas.hidden;
      if (!canDraw && this.drawing) this.setDrawing(false);
      e.draw.disabled = !canDraw;
      e.clear.disabled = !canDraw;
      e.canvas.classList.toggle('controlling', this.control);
      e.wrap.hidden = !this.sharer;
    }

    start() {
      if (!this.stopped) return;
      this.stopped = false;
      this.connect();
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.retry);
      if (this.ws) this.ws.close();
    }
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  window.CustosScreen = ScreenView;
  window.CustosPainter = Painter;
  window.CustosMediaView = MediaView;
  window.CustosScreenKind = kindOf;
})();
