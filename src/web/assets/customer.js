// Custos customer chat page. Plain ES2020, no dependencies. Everything that comes from the
// network is inserted with textContent; links get an href only when they start with http:// or
// https://.
'use strict';

(() => {
  // The shared helpers and classes (common.js, loaded before this script).
  const {
    $, API, CHAT_MAX, str, charCount, showError, setText, api, SessionSocket, TypingSender,
    MessageList, addFile, uploadFile,
  } = window.CustosCommon;

  // ---------------------------------------------------------------------------------------------
  // The page

  const sessionId = (() => {
    const parts = location.pathname.split('/').filter(Boolean);
    const last = parts[parts.length - 1] || '';
    try { return decodeURIComponent(last); } catch (_) { return last; }
  })();
  const base = `${API}/sessions/${encodeURIComponent(sessionId)}`;

  const ui = {};
  const st = {
    phase: 'loading', // waiting | active | ended | cancelled | replaced | error
    agent: '',
    helloGen: -1,
    theirTypingTimer: null,
    surveyDone: false,
    lastCheck: 0,
  };
  let list = null;
  let sock = null;
  let typingOut = null;

  function agentName(a) {
    if (a && typeof a === 'object') return str(a.name);
    return str(a);
  }

  function humanWait(s) {
    const v = Number(s);
    if (s === undefined || s === null || s === '' || !Number.isFinite(v) || v < 0) return '–';
    if (v < 60) return 'less than a minute';
    const m = Math.round(v / 60);
    if (m < 2) return 'about 1 minute';
    if (m < 60) return `about ${m} minutes`;
    const h = Math.round(v / 3600);
    return h <= 1 ? 'about 1 hour' : `about ${h} hours`;
  }

  function setStatus(text) {
    setText(ui.status, text);
  }

  function updateQueue(position, wait) {
    if (position !== undefined && position !== null) {
      const p = Number(position);
      ui.queuePosition.textContent = Number.isInteger(p) && p > 0 ? String(p) : '–';
    }
    if (wait !== undefined && wait !== null) ui.queueWait.textContent = humanWait(wait);
  }

  function showWaiting(position, wait) {
    st.phase = 'waiting';
    setStatus('Waiting for an agent');
    ui.waiting.hidden = false;
    ui.cancel.disabled = false;
    ui.chat.hidden = false;
    ui.end.hidden = true;
    updateQueue(position, wait);
  }

  function showActive(agent) {
    st.phase = 'active';
    if (agent) st.agent = agent;
    setStatus(`Chatting with ${st.agent || 'an agent'}`);
    ui.waiting.hidden = true;
    ui.chat.hidden = false;
    ui.end.hidden = false;
    ui.end.disabled = false;
  }

  function failPending() {
    for (const p of list.pending.values()) {
      p.li.classList.remove('pending');
      p.li.classList.add('failed');
      list.setState(p.li, 'not sent');
    }
    list.pending.clear();
  }

  // Sends the pending messages that have not gone out on this connection. The server takes chat
  // only while the session is active, so messages written in the waiting room wait here.
  function flushPending() {
    if (st.phase !== 'active' || st.helloGen !== sock.gen) return;
    for (const p of list.unsent(sock.gen)) {
      if (sock.send({ type: 'chat', text: p.text, id: p.id })) {
        p.entry.gen = sock.gen;
        if (p.entry.li.classList.contains('pending')) list.setState(p.entry.li, 'sending…');
      }
    }
  }

  // The conversation is over (ended or cancelled): no more sending, no more reconnecting.
  function finish(kind) {
    const focusWasInside = ui.chat.contains(document.activeElement) || ui.waiting.contains(document.activeElement);
    st.phase = kind;
    sock.stop();
    clearTimeout(typingOut.idle);
    typingOut.on = false;
    theirTyping(false);
    failPending();
    setText(ui.connection, '');
    ui.waiting.hidden = true;
    ui.chatForm.hidden = true;
    ui.fileTools.hidden = true;
    ui.end.hidden = true;
    ui.chat.hidden = ui.messages.children.length === 0 && ui.files.children.length === 0;
    if (kind === 'ended') {
      setStatus('Session ended');
      ui.survey.hidden = st.surveyDone;
      ui.surveyThanks.hidden = !st.surveyDone;
      if (focusWasInside && !st.surveyDone) document.getElementById('rating-1').focus();
    } else {
      setStatus('Cancelled');
      ui.survey.hidden = true;
    }
  }

  function fatal(message) {
    st.phase = 'error';
    if (sock) sock.stop();
    setStatus('Unavailable');
    setText(ui.connection, '');
    ui.waiting.hidden = true;
    ui.chat.hidden = true;
    ui.survey.hidden = true;
    showError(ui.error, message);
  }

  function theirTyping(on) {
    clearTimeout(st.theirTypingTimer);
    ui.typing.hidden = !on;
    if (on) {
      ui.typing.textContent = `${st.agent || 'The agent'} is typing…`;
      st.theirTypingTimer = setTimeout(() => { ui.typing.hidden = true; }, 6000);
    }
  }

  function onMessage(m) {
    if (st.phase === 'ended' || st.phase === 'cancelled' || st.phase === 'error') return;
    switch (m.type) {
      case 'hello': onHello(m); break;
      case 'queue':
        if (st.phase !== 'active') showWaiting(m.position, m.estimated_wait_s);
        break;
      case 'accepted': {
        const was = st.phase;
        showActive(agentName(m.agent));
        if (was !== 'active') list.system(`${st.agent || 'An agent'} joined the chat.`);
        flushPending();
        break;
      }
      case 'chat':
        list.chat(m);
        if (m.from === 'agent') theirTyping(false);
        break;
      case 'ack': list.ack(m); break;
      case 'url': list.url(m); break;
      case 'file': list.file(m); break;
      case 'sensitive': list.markSensitive(m); break;
      case 'typing': if (m.from !== 'customer') theirTyping(!!m.on); break;
      case 'transferred': {
        const to = str(m.to);
        theirTyping(false);
        if (to === 'queue') {
          showWaiting();
          list.system('You are back in the queue: the next available agent will continue with you.');
        } else {
          showActive(to);
          list.system(`You have been transferred to ${to || 'another agent'}.`);
          flushPending();
        }
        break;
      }
      case 'ended':
        list.system('The chat has ended.');
        finish('ended');
        break;
      case 'error':
        showError(ui.error, str(m.message) || str(m.code) || 'The server refused a message.');
        break;
      case 'replaced':
        st.phase = 'replaced';
        sock.stop();
        setText(ui.connection, '');
        setControls(false);
        showError(ui.error, 'This chat is now open in another window or tab. Continue there, or reload this page to continue here.');
        break;
      default: break; // pong, participant, and anything newer
    }
  }

  function onHello(m) {
    st.helloGen = sock.gen;
    const s = m.session && typeof m.session === 'object' ? m.session : {};
    if (agentName(s.agent)) st.agent = agentName(s.agent);
    const history = Array.isArray(m.history) ? m.history : [];
    for (const h of history) {
      if (h && typeof h === 'object') list.ingest(h);
    }
    setText(ui.connection, '');
    if (s.status === 'ended') {
      finish('ended');
      return;
    }
    if (s.status === 'cancelled') {
      finish('cancelled');
      return;
    }
    if (s.status === 'active') showActive();
    else if (s.status === 'waiting') showWaiting(s.position, s.estimated_wait_s);
    // Pending messages found in the history were settled by ingest; the others go (again).
    flushPending();
  }

  function onSocketState(s, delay) {
    if (s === 'retry') {
      setText(ui.connection, `Connection lost, reconnecting in ${Math.round(delay / 1000)} s…`);
      if (sock.failures >= 3 && Date.now() - st.lastCheck > 30000) {
        st.lastCheck = Date.now();
        checkSession();
      }
    } else if (s === 'connecting' && st.helloGen < 0) {
      setText(ui.connection, 'Connecting…');
    }
  }

  // When the socket keeps failing, ask the server why: the session may have ended, or the link
  // may no longer be valid in this browser.
  async function checkSession() {
    try {
      const s = await api('GET', `${base}/customer`);
      if (s.status === 'ended') finish('ended');
      else if (s.status === 'cancelled') finish('cancelled');
    } catch (e) {
      if (e.status === 401 || e.status === 404) fatal(e.status === 401 ? MSG_401 : MSG_404);
    }
  }

  const MSG_401 = 'This chat cannot be opened here: the link has expired or was opened in another browser.';
  const MSG_404 = 'This support session does not exist or is no longer available.';

  function setControls(on) {
    ui.chat.querySelectorAll('textarea, input, button').forEach((c) => { c.disabled = !on; });
    ui.cancel.disabled = !on;
  }

  function sendChat() {
    if (st.phase !== 'waiting' && st.phase !== 'active') return;
    const text = ui.input.value.trim();
    if (!text) return;
    if (charCount(text) > CHAT_MAX) {
      showError(ui.error, `A message can have at most ${CHAT_MAX} characters.`);
      return;
    }
    showError(ui.error, '');
    const id = list.addPending(text, 'You');
    typingOut.stop();
    if (st.phase === 'waiting') {
      list.setState(list.pending.get(id).li, 'sent when an agent joins');
    }
    // Not connected, no hello yet on this connection, or still waiting: it goes out later.
    flushPending();
    ui.input.value = '';
    ui.input.focus();
  }

  async function upload() {
    const file = ui.fileInput.files && ui.fileInput.files[0];
    if (!file) {
      showError(ui.error, 'Choose a file first.');
      ui.fileInput.focus();
      return;
    }
    showError(ui.error, '');
    ui.fileSend.disabled = true;
    ui.progress.max = file.size || 1;
    ui.progress.value = 0;
    ui.progress.hidden = false;
    ui.fileStatus.textContent = `Uploading ${file.name}…`;
    try {
      const r = await uploadFile(sessionId, file, (loaded, total) => {
        ui.progress.max = total || 1;
        ui.progress.value = loaded;
      });
      addFile(ui.files, sessionId, { name: file.name, size: file.size, ...r });
      ui.fileStatus.textContent = `Sent ${str(r.name) || file.name}.`;
      ui.fileInput.value = '';
    } catch (e) {
      ui.fileStatus.textContent = '';
      showError(ui.error, e.message);
    } finally {
      ui.progress.hidden = true;
      ui.fileSend.disabled = false;
    }
  }

  async function cancelRequest() {
    ui.cancel.disabled = true;
    showError(ui.error, '');
    try {
      await api('POST', `${API}/requests/${encodeURIComponent(sessionId)}/cancel`);
      list.system('You cancelled your request.');
      finish('cancelled');
    } catch (e) {
      showError(ui.error, e.message);
      ui.cancel.disabled = false;
    }
  }

  async function endChat() {
    ui.end.disabled = true;
    showError(ui.error, '');
    try {
      await api('POST', `${base}/end`);
      if (st.phase !== 'ended') {
        list.system('You ended the chat.');
        finish('ended');
      }
    } catch (e) {
      showError(ui.error, e.message);
      ui.end.disabled = false;
    }
  }

  async function submitSurvey(e) {
    e.preventDefault();
    const checked = ui.survey.querySelector('input[name="rating"]:checked');
    if (!checked) {
      showError(ui.surveyError, 'Please choose a rating from 1 to 5.');
      ui.rating.setAttribute('aria-invalid', 'true');
      document.getElementById('rating-1').focus();
      return;
    }
    ui.rating.removeAttribute('aria-invalid');
    const comment = ui.surveyComment.value.trim();
    if (charCount(comment) > CHAT_MAX) {
      showError(ui.surveyError, `Comments can have at most ${CHAT_MAX} characters.`);
      ui.surveyComment.focus();
      return;
    }
    showError(ui.surveyError, '');
    ui.surveySubmit.disabled = true;
    try {
      await api('POST', `${base}/survey`, { rating: Number(checked.value), comment });
      st.surveyDone = true;
      ui.survey.hidden = true;
      ui.surveyThanks.hidden = false;
      ui.surveyThanks.focus();
    } catch (err) {
      showError(ui.surveyError, err.message);
    } finally {
      ui.surveySubmit.disabled = false;
    }
  }

  async function load() {
    const ids = {
      title: 'portal-title', status: 'status', connection: 'connection', error: 'error',
      waiting: 'waiting', queuePosition: 'queue-position', queueWait: 'queue-wait', cancel: 'cancel',
      chat: 'chat', messages: 'messages', typing: 'typing', chatForm: 'chat-form', input: 'chat-input',
      send: 'send', fileTools: 'file-tools', fileInput: 'file-input', fileSend: 'file-send',
      progress: 'file-progress', fileStatus: 'file-status', files: 'files', end: 'end',
      survey: 'survey', surveyComment: 'survey-comment', surveyError: 'survey-error',
      surveySubmit: 'survey-submit', surveyThanks: 'survey-thanks',
    };
    for (const [k, id] of Object.entries(ids)) ui[k] = document.getElementById(id);
    ui.rating = ui.survey.querySelector('fieldset.rating');
    ui.rating.setAttribute('aria-describedby', 'survey-error');

    list = new MessageList(ui.messages, {
      ownFrom: 'customer',
      who: (m, kind) => {
        if (kind !== 'url' && m.from === 'customer') return 'You';
        // A file message's name is the file's name, not the sender's.
        return (kind === 'file' ? '' : str(m.name)) || st.agent || 'Agent';
      },
      onFile: (m) => addFile(ui.files, sessionId, m),
    });
    sock = new SessionSocket(sessionId, onMessage, onSocketState);
    typingOut = new TypingSender((o) => sock.send(o));

    ui.chatForm.addEventListener('submit', (e) => { e.preventDefault(); sendChat(); });
    ui.input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && !e.altKey && !e.ctrlKey && !e.metaKey) {
        e.preventDefault();
        sendChat();
      }
    });
    ui.input.addEventListener('input', () => { if (ui.input.value) typingOut.input(); else typingOut.stop(); });
    ui.input.addEventListener('blur', () => typingOut.stop());
    ui.fileSend.addEventListener('click', upload);
    ui.cancel.addEventListener('click', cancelRequest);
    ui.end.addEventListener('click', endChat);
    ui.survey.addEventListener('submit', submitSurvey);
    ui.survey.addEventListener('change', () => {
      if (ui.survey.querySelector('input[name="rating"]:checked')) {
        showError(ui.surveyError, '');
        ui.rating.removeAttribute('aria-invalid');
      }
    });

    if (!sessionId) {
      fatal(MSG_404);
      return;
    }
    let s;
    try {
      s = await api('GET', `${base}/customer`);
    } catch (e) {
      if (e.status === 401) fatal(MSG_401);
      else if (e.status === 404) fatal(MSG_404);
      else fatal(e.message);
      return;
    }
    const title = str(s.portal_title);
    if (title) {
      ui.title.textContent = title;
      document.title = `${title} · Support chat`;
    }
    st.agent = agentName(s.agent);
    st.surveyDone = s.survey_submitted === true;
    switch (s.status) {
      case 'ended': finish('ended'); return;
      case 'cancelled': finish('cancelled'); return;
      case 'active': showActive(); break;
      default: showWaiting(s.position, s.estimated_wait_s); break;
    }
    sock.start();
  }

  load();
})();
