// Browser screen share for the customer page, view only and with nothing to install: the
// screen, window or tab the user picks (getDisplayMedia) is recorded by MediaRecorder as WebM
// in half-second chunks and sent on the session's screen socket (docs/formats/recording.md,
// message kind 3). A new WebM stream starts whenever an agent starts watching or asks for a
// fresh picture, so the agent's player can always begin at a stream's header.
'use strict';

(() => {
  const m = location.pathname.match(/^\/s\/([^/]+)$/);
  const sessionId = m ? decodeURIComponent(m[1]) : '';
  const MIME = 'video/webm;codecs=vp9';
  let ui = {};
  let ws = null;
  let stream = null;
  let rec = null;
  let chain = Promise.resolve();

  function setStatus(t) { if (ui.status.textContent !== t) ui.status.textContent = t; }

  function send(o) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(o)); }

  function consent(view) {
    send({ type: 'consent', view, control: false, files: false, diagnostics: false, reboot: false });
  }

  function stopRecorder() {
    if (rec && rec.state !== 'inactive') {
      rec.ondataavailable = null;
      rec.stop();
    }
    rec = null;
  }

  // Starts a new WebM stream; its first chunk carries the START flag.
  function startRecorder() {
    stopRecorder();
    if (!stream) return;
    let first = true;
    const r = new MediaRecorder(stream, MediaRecorder.isTypeSupported(MIME) ? { mimeType: MIME } : {});
    r.ondataavailable = (e) => {
      if (!e.data || !e.data.size) return;
      const flags = first ? 1 : 0;
      first = false;
      // Chunks are sent in order, each once its bytes are read.
      chain = chain.then(async () => {
        const body = new Uint8Array(await e.data.arrayBuffer());
        if (rec !== r || !ws || ws.readyState !== WebSocket.OPEN) return;
        const msg = new Uint8Array(4 + body.length);
        msg.set([1, 3, flags, 0]);
        msg.set(body, 4);
        ws.send(msg);
      });
    };
    rec = r;
    r.start(500);
  }

  function connect() {
    ws = new WebSocket(`wss://${location.host}/api/v1/sessions/${encodeURIComponent(sessionId)}/screen`);
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => consent(true);
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      let msg;
      try { msg = JSON.parse(ev.data); } catch (_) { return; }
      if (msg.type === 'hello' && msg.viewer) startRecorder();
      else if (msg.type === 'viewer') {
        if (msg.on) startRecorder(); else stopRecorder();
        setStatus(msg.on ? 'The agent is watching your shared screen. Stop sharing at any moment.' :
          'Your screen is shared; the agent is not watching right now.');
      } else if (msg.type === 'keyframe') startRecorder();
    };
    ws.onclose = () => { if (stream) stop('The connection was lost; your screen is no longer shared.'); };
  }

  async function share() {
    ui.share.disabled = true;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false, preferCurrentTab: true });
    } catch (e) {
      ui.share.disabled = false;
      setStatus(`Your screen was not shared (${e.message || e.name}).`);
      return;
    }
    stream.getVideoTracks().forEach((t) => { t.onended = () => stop('You stopped sharing your screen.'); });
    connect();
    ui.share.hidden = true;
    ui.stop.hidden = false;
    setStatus('Your screen is shared with the agent (view only). Stop sharing at any moment.');
  }

  function stop(message) {
    stopRecorder();
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    consent(false);
    if (ws) { ws.onclose = null; ws.close(); }
    ws = null;
    ui.share.hidden = false;
    ui.share.disabled = false;
    ui.stop.hidden = true;
    setStatus(message);
  }

  document.addEventListener('DOMContentLoaded', () => {
    ui = {
      tools: document.getElementById('share-tools'), share: document.getElementById('share'),
      stop: document.getElementById('share-stop'), status: document.getElementById('share-status'),
    };
    if (!sessionId || !navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia || !window.MediaRecorder) {
      ui.tools.hidden = true;
      return;
    }
    ui.share.addEventListener('click', share);
    ui.stop.addEventListener('click', () => stop('You stopped sharing your screen.'));
  });
})();
