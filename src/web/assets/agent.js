// Custos agent console. Plain ES2020, no dependencies. Everything that comes from the network is
// inserted with textContent; links get an href only when they start with http:// or https://.
'use strict';

(() => {
  // The shared helpers and classes (common.js, loaded before this script).
  const {
    $, API, CHAT_MAX, el, str, fmtTime, fmtWaited, safeHref, charCount, toSeq, showError, setText,
    api, SessionSocket, TypingSender, MessageList, addFile, uploadFile, setAuthFailureHandler,
  } = window.CustosCommon;

  const URL_MAX = 2000;

  // The customer field of a summary may be a name or an object with a name.
  function customerName(s) {
    if (!s || typeof s !== 'object') return '';
    const c = s.customer;
    if (c && typeof c === 'object') return str(c.name);
    return str(c || s.customer_name || s.name);
  }

  setAuthFailureHandler((status, err) => {
    if (status === 401) onUnauthorized();
    else if (status === 403 && err.code === 'password_change_required') showPasswordForm();
  });

  // ---------------------------------------------------------------------------------------------
  // Console state

  const state = {
    me: null,
    started: false,
    sessions: new Map(), // session id → AgentSession
    order: [], // tab order
    selected: null,
    canned: [],
    dismissed: new Set(), // ended sessions whose tab was closed: never reopened from the queue
    assigned: null, // session ids in the latest queue snapshot
    es: null,
    esRetry: null,
    esAttempt: 0,
    waitTicker: null,
  };

  const ui = {};

  // ---------------------------------------------------------------------------------------------
  // One session: tab, panel, socket.

  class AgentSession {
    constructor(id, info) {
      this.id = id;
      this.info = {};
      this.closed = null; // null, or 'ended' | 'transferred' | 'cancelled' | 'replaced' | 'gone'
      this.closedAt = 0;
      this.state = 'connecting';
      this.peer = '';
      this.theirTypingTimer = null;
      this.openedAt = Date.now();
      this.buildTab();
      this.buildPanel();
      this.list = new MessageList(this.p.messages, {
        ownFrom: 'agent',
        who: (m, kind) => this.who(m, kind),
        onFile: (m) => addFile(this.p.files, this.id, m),
        onSensitive: (seq, button) => this.markSensitive(seq, button),
      });
      this.typingOut = new TypingSender((o) => this.sock.send(o));
      this.sock = new SessionSocket(id, (m) => this.onMessage(m), (s, x) => this.onSocketState(s, x));
      this.screen = new window.CustosScreen(this.panel, id);
      this.mergeInfo(info);
      this.renderStatus();
    }

    buildTab() {
      const b = el('button', 'tab');
      b.type = 'button';
      b.id = `tab-${this.id}`;
      b.dataset.sessionId = this.id;
      b.setAttribute('role', 'tab');
      b.setAttribute('aria-controls', `panel-${this.id}`);
      b.setAttribute('aria-selected', 'false');
      b.tabIndex = -1;
      this.tabLabel = el('span', 'tab-label', 'Session');
      this.tabUnread = el('span', 'sr-only', '');
      b.append(this.tabLabel, this.tabUnread);
      b.addEventListener('click', () => selectSession(this.id));
      b.addEventListener('keydown', onTabKey);
      this.tab = b;
      ui.tabs.append(b);
    }

    buildPanel() {
      const frag = ui.template.content.cloneNode(true);
      const panel = frag.querySelector('.session-panel');
      panel.id = `panel-${this.id}`;
      panel.dataset.sessionId = this.id;
      panel.setAttribute('aria-labelledby', `tab-${this.id}`);
      panel.hidden = true;
      // Give each labelled control a unique id and point its label at it.
      panel.querySelectorAll('label[data-for]').forEach((label) => {
        const cls = label.dataset.for;
        const ctl = panel.querySelector(`.${cls}`);
        if (!ctl) return;
        ctl.id = `${cls}-${this.id}`;
        label.htmlFor = ctl.id;
      });
      panel.querySelectorAll('[data-describedby]').forEach((ctl) => {
        const hint = panel.querySelector(`.${ctl.dataset.describedby}`);
        if (!hint) return;
        hint.id = `${ctl.dataset.describedby}-${this.id}`;
        ctl.setAttribute('aria-describedby', hint.id);
      });
      const q = (c) => panel.querySelector(c);
      this.panel = panel;
      this.p = {
        status: q('.status'), conn: q('.conn'), error: q('.panel-error'),
        name: q('.c-name'), portal: q('.c-portal'), question: q('.c-question'), ref: q('.c-ref'),
        messages: q('.messages'), typing: q('.typing'),
        composer: q('.composer'), canned: q('.canned'), input: q('.chat-input'), send: q('.send'),
        pushForm: q('.push-form'), pushUrl: q('.push-url'),
        noteForm: q('.note-form'), noteInput: q('.note-input'),
        fileInput: q('.file-input'), fileSend: q('.file-send'), progress: q('.file-progress'),
        fileStatus: q('.file-status'), files: q('.files'),
        transferForm: q('.transfer-form'), transferAgent: q('.transfer-agent'),
        transferNote: q('.transfer-note'), transferQueue: q('.transfer-queue'),
        end: q('.end'), reconnect: q('.reconnect'), closeTab: q('.close-tab'),
        diagAsk: q('.diag-ask'), diagStatus: q('.diag-status'),
        kbForm: q('.kb-form'), kbQuery: q('.kb-query'), kbStatus: q('.kb-status'), kbList: q('.kb-list'),
      };
      fillCanned(this.p.canned);
      this.wire();
      ui.panels.append(frag);
    }

    wire() {
      const p = this.p;
      p.composer.addEventListener('submit', (e) => { e.preventDefault(); this.sendChat(); });
      p.input.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && !e.altKey && !e.ctrlKey && !e.metaKey) {
          e.preventDefault();
          this.sendChat();
        }
      });
      p.input.addEventListener('input', () => { if (p.input.value) this.typingOut.input(); else this.typingOut.stop(); });
      p.input.addEventListener('blur', () => this.typingOut.stop());
      p.canned.addEventListener('change', () => {
        const i = p.canned.value;
        const reply = i === '' ? null : state.canned[Number(i)];
        p.canned.value = '';
        if (!reply) return;
        const t = p.input;
        const start = t.selectionStart ?? t.value.length;
        const end = t.selectionEnd ?? t.value.length;
        t.setRangeText(str(reply.text), start, end, 'end');
        t.focus();
      });
      p.pushForm.addEventListener('submit', (e) => { e.preventDefault(); this.pushUrl(); });
      p.noteForm.addEventListener('submit', (e) => { e.preventDefault(); this.addNote(); });
      p.fileSend.addEventListener('click', () => this.upload());
      p.transferForm.addEventListener('submit', (e) => { e.preventDefault(); this.transfer(false); });
      p.transferQueue.addEventListener('click', () => this.transfer(true));
      p.end.addEventListener('click', () => this.end());
      p.reconnect.addEventListener('click', () => this.reopen());
      p.closeTab.addEventListener('click', () => closeSession(this.id));
      p.kbForm.addEventListener('submit', (e) => { e.preventDefault(); this.searchArticles(); });
      p.diagAsk.addEventListener('click', () => this.askDiagnostics());
    }

    // Knowledge base: suggestions from what the customer wrote (refreshed a moment after each
    // of their messages), a search, and one button per article that sends it to the customer.
    suggestSoon() {
      if (this.closed || this.kbSearching) return;
      clearTimeout(this.kbTimer);
      this.kbTimer = setTimeout(() => this.loadSuggestions(), 600);
    }

    async loadSuggestions() {
      if (this.closed || this.state !== 'active') return;
      try {
        const r = await api('GET', `${API}/sessions/${encodeURIComponent(this.id)}/suggestions`);
        if (this.kbSearching) return;
        const list = Array.isArray(r.suggestions) ? r.suggestions : [];
        this.renderArticles(list, list.length ? 'Suggested from the conversation:' : 'No suggestions yet.');
      } catch (e) {
        setText(this.p.kbStatus, `Suggestions unavailable: ${e.message}`);
      }
    }

    async searchArticles() {
      const q = this.p.kbQuery.value.trim();
      if (!q) {
        this.kbSearching = false;
        this.loadSuggestions();
        return;
      }
      this.kbSearching = true;
      try {
        const r = await api('GET', `${API}/kb/search?q=${encodeURIComponent(q)}`);
        const list = Array.isArray(r.results) ? r.results : [];
        this.renderArticles(list, list.length ? `Articles matching "${q}":` : `No article matches "${q}".`);
      } catch (e) {
        setText(this.p.kbStatus, e.message);
      }
    }

    renderArticles(list, heading) {
      setText(this.p.kbStatus, heading);
      const items = list.filter((a) => a && typeof a === 'object' && typeof a.slug === 'string').map((a) => {
        const li = el('li', 'kb-item');
        li.dataset.slug = a.slug;
        li.append(el('strong', 'kb-title', str(a.title)));
        const why = a.reason === 'version' ?
          `${str(a.package)} ${str(a.installed)} is below ${str(a.below)}` : str(a.snippet);
        if (why) li.append(el('p', 'hint', why));
        const send = el('button', 'kb-push', a.push_url ? 'Send link' : 'Send article');
        send.type = 'button';
        send.addEventListener('click', () => this.pushArticle(a, send));
        li.append(send);
        return li;
      });
      this.p.kbList.replaceChildren(...items);
    }

    async askDiagnostics() {
      if (this.closed) return;
      this.p.diagAsk.disabled = true;
      try {
        await api('POST', `${API}/sessions/${encodeURIComponent(this.id)}/diagnostics/request`);
        setText(this.p.diagStatus, 'Asked the customer\'s computer for diagnostics.');
      } catch (e) {
        showError(this.p.error, e.message);
      } finally {
        this.p.diagAsk.disabled = false;
      }
    }

    async pushArticle(a, button) {
      if (this.closed) return;
      button.disabled = true;
      try {
        await api('POST', `${API}/sessions/${encodeURIComponent(this.id)}/kb/${encodeURIComponent(a.slug)}/push`);
        setText(this.p.kbStatus, `Sent "${str(a.title)}" to the customer.`);
      } catch (e) {
        showError(this.p.error, e.message);
      } finally {
        button.disabled = false;
      }
    }

    who(m, kind) {
      if (kind === 'note') return `${str(m.name) || 'Agent'} · private note`;
      if (kind === 'url') return 'Link pushed';
      // A file message's name is the file's name, not the sender's.
      const name = kind === 'file' ? '' : str(m.name);
      // The server may name the customer just "customer": the summary's name is better.
      if (m.from !== 'agent') return this.info.customer || name || 'Customer';
      return name || (kind === 'file' ? 'Agent' : state.me || 'Agent');
    }

    mergeInfo(info) {
      if (!info || typeof info !== 'object') return;
      const set = (k, v) => { if (v !== undefined && v !== null && v !== '') this.info[k] = String(v); };
      set('customer', customerName(info));
      set('portal', info.portal);
      set('skill', info.skill);
      set('question', info.question);
      set('ref', info.ref);
      set('status', info.status);
      set('transfer_note', info.transfer_note);
      const i = this.info;
      const label = i.customer || `Session ${this.id.slice(-6)}`;
      this.tabLabel.textContent = label;
      this.p.name.textContent = i.customer || '—';
      this.p.portal.textContent = [i.portal, i.skill].filter(Boolean).join(' / ') || '—';
      this.p.question.textContent = i.question || '—';
      this.p.ref.textContent = i.ref || '—';
      if (info.status === 'waiting' || info.status === 'active') {
        if (!this.closed) this.state = info.status;
      }
      this.renderStatus();
    }

    renderStatus() {
      let text;
      switch (this.closed) {
        case 'ended': text = `Session ended${this.endedBy ? ` by ${this.endedBy}` : ''}`; break;
        case 'transferred': text = `Session transferred to ${this.transferredTo}`; break;
        case 'cancelled': text = 'Session cancelled by the customer'; break;
        case 'replaced': text = 'Session opened in another window'; break;
        case 'gone': text = 'Session no longer assigned to you'; break;
        default:
          text = this.state === 'waiting' ? 'Session waiting' :
            this.state === 'active' ? 'Session active' : 'Session connecting…';
      }
      setText(this.p.status, text);
      this.p.status.dataset.state = this.closed || this.state;
    }

    onSocketState(s, delay) {
      if (this.closed) return;
      if (s === 'connecting') setText(this.p.conn, 'Connecting…');
      else if (s === 'open') setText(this.p.conn, this.peer);
      else if (s === 'retry') {
        setText(this.p.conn, `Connection lost, reconnecting in ${Math.round(delay / 1000)} s…`);
        // A socket that keeps failing for a session that is no longer ours: stop.
        if (this.sock.failures >= 3 && state.assigned && state.assigned.at > this.openedAt &&
            !state.assigned.ids.has(this.id)) {
          this.close('gone');
        }
      }
    }

    onMessage(m) {
      switch (m.type) {
        case 'hello': this.onHello(m); break;
        case 'chat':
          if (this.list.chat(m)) this.activity();
          if (m.from === 'customer') {
            this.theirTyping(false);
            this.suggestSoon();
          }
          break;
        case 'ack': this.list.ack(m); break;
        case 'url': if (this.list.url(m)) this.activity(); break;
        case 'note': if (this.list.note(m)) this.activity(); break;
        case 'file': if (this.list.file(m)) this.activity(); break;
        case 'sensitive':
          this.list.markSensitive(m);
          // The button that had the focus went away with the marking: give it to the composer.
          if (this.refocusAfterMark !== undefined && toSeq(m.target) === this.refocusAfterMark) {
            this.refocusAfterMark = undefined;
            const f = document.activeElement;
            if (!this.closed && (!f || f === document.body || !f.isConnected)) this.p.input.focus();
          }
          break;
        case 'typing': if (m.from !== 'agent') this.theirTyping(!!m.on); break;
        case 'participant': this.onParticipant(m); break;
        case 'accepted':
          this.state = 'active';
          if (!this.closed) this.renderStatus();
          this.suggestSoon();
          this.list.system(`Session accepted by ${str(m.agent) || 'an agent'}.`);
          break;
        case 'diagnostics': {
          const d = m.summary && typeof m.summary === 'object' ? m.summary : {};
          const parts = [str(d.os), d.kernel ? `kernel ${str(d.kernel)}` : '', str(d.cpu),
            d.packages ? `${str(d.packages)} packages` : ''].filter(Boolean);
          this.list.system(`Diagnostics received: ${parts.join(', ') || 'no details'}.`, m.at);
          this.suggestSoon();
          break;
        }
        case 'transferred': this.onTransferred(m); break;
        case 'ended':
          if (this.closed === 'ended') break;
          this.endedBy = str(m.by);
          this.list.system(`The session ended${this.endedBy ? ` (by ${this.endedBy})` : ''}.`);
          this.close('ended');
          this.activity();
          break;
        case 'error':
          showError(this.p.error, str(m.message) || str(m.code) || 'The server refused a message.');
          this.releaseMarkButtons();
          break;
        case 'replaced':
          this.list.system('This session was opened in another window; this one stopped.');
          this.close('replaced');
          break;
        default: break; // pong, queue, and anything newer
      }
    }

    onHello(m) {
      this.helloGen = this.sock.gen;
      const s = m.session && typeof m.session === 'object' ? m.session : {};
      this.mergeInfo(s);
      if (this.info.transfer_note && !this.shownTransferNote) {
        this.shownTransferNote = true;
        this.list.system(`Transfer note: ${this.info.transfer_note}`);
      }
      const history = Array.isArray(m.history) ? m.history : [];
      for (const h of history) {
        if (h && typeof h === 'object') this.list.ingest(h);
      }
      this.releaseMarkButtons(); // a marking sent on an earlier connection may have been lost
      // Pending chats that the archive has (their id came back in the history) were settled by
      // ingest; the others are sent again with the same id.
      for (const p of this.list.unsent(this.sock.gen)) {
        if (this.sock.send({ type: 'chat', text: p.text, id: p.id })) p.entry.gen = this.sock.gen;
      }
      setText(this.p.conn, this.peer);
      if (s.status === 'ended') {
        this.close('ended');
      } else if (s.status === 'cancelled') {
        this.close('cancelled');
      } else {
        if (s.status === 'waiting' || s.status === 'active') this.state = s.status;
        else if (this.state === 'connecting') this.state = 'active';
        this.renderStatus();
        this.suggestSoon();
      }
    }

    onParticipant(m) {
      const name = m.who === 'customer' ? this.info.customer || 'The customer' : str(m.name) || 'An agent';
      const joined = m.event === 'join';
      if (m.who === 'customer') {
        this.peer = joined ? 'Customer connected' : 'Customer disconnected';
        if (!this.closed) setText(this.p.conn, this.peer);
        if (!joined) this.theirTyping(false);
      }
      this.list.system(`${name} ${joined ? 'joined' : 'left'}.`);
    }

    onTransferred(m) {
      if (this.closed === 'transferred') return;
      const to = str(m.to);
      const note = str(m.note);
      if (to && to !== 'queue' && to === state.me) {
        this.list.system(`This session was transferred to you.${note ? ` Note: ${note}` : ''}`);
        return;
      }
      this.transferredTo = to === 'queue' ? 'the queue' : (to || 'another agent');
      this.list.system(`Transferred to ${this.transferredTo}.${note ? ` Note: ${note}` : ''}`);
      this.close('transferred');
      this.activity();
    }

    theirTyping(on) {
      clearTimeout(this.theirTypingTimer);
      this.p.typing.hidden = !on;
      if (on) this.theirTypingTimer = setTimeout(() => { this.p.typing.hidden = true; }, 6000);
    }

    activity() {
      if (state.selected !== this.id) {
        this.tab.classList.add('unread');
        this.tabUnread.textContent = ' (new activity)';
        updateTitle();
      }
    }

    controls() {
      return Array.from(this.panel.querySelectorAll('.composer *, .tools input, .tools button, .tools select, .tools textarea, .messages .mark-sensitive'))
        .filter((c) => 'disabled' in c && !c.classList.contains('close-tab') && !c.classList.contains('reconnect'));
    }

    setEnabled(on) {
      for (const c of this.controls()) c.disabled = !on;
    }

    close(kind) {
      if (this.closed === 'ended' && kind !== 'ended') return;
      this.closed = kind;
      this.closedAt = Date.now();
      this.sock.stop();
      this.screen.stop();
      this.typingOut.on = false;
      clearTimeout(this.typingOut.idle);
      this.theirTyping(false);
      this.list.clearPendingOther();
      this.setEnabled(false);
      setText(this.p.conn, '');
      this.p.reconnect.hidden = kind !== 'replaced';
      this.p.closeTab.hidden = false;
      this.panel.classList.add('closed');
      this.tab.classList.add('closed');
      this.renderStatus();
    }

    reopen() {
      if (this.closed === 'ended') return;
      this.closed = null;
      this.state = 'connecting';
      this.openedAt = Date.now();
      this.setEnabled(true);
      fillCanned(this.p.canned);
      this.p.reconnect.hidden = true;
      this.p.closeTab.hidden = true;
      this.panel.classList.remove('closed');
      this.tab.classList.remove('closed');
      showError(this.p.error, '');
      this.renderStatus();
      this.sock.start();
      this.screen.start();
    }

    sendChat() {
      if (this.closed) return;
      const text = this.p.input.value.trim();
      if (!text) return;
      if (charCount(text) > CHAT_MAX) {
        showError(this.p.error, `A message can have at most ${CHAT_MAX} characters.`);
        return;
      }
      showError(this.p.error, '');
      const id = this.list.addPending(text, state.me || 'You');
      this.typingOut.stop();
      // Not connected (or no hello yet on this connection): it goes out after the next hello.
      if (this.helloGen === this.sock.gen && this.sock.send({ type: 'chat', text, id })) {
        this.list.pending.get(id).gen = this.sock.gen;
      }
      this.p.input.value = '';
      this.p.input.focus();
    }

    // Asks the server to mark chat message `seq` as sensitive; the button stays disabled until the
    // server's `sensitive` record removes it (or an error or a new connection releases it).
    markSensitive(seq, button) {
      if (this.closed) return;
      if (!this.sock.send({ type: 'sensitive', seq })) {
        showError(this.p.error, 'Not connected: the message was not marked. Try again in a moment.');
        return;
      }
      showError(this.p.error, '');
      this.refocusAfterMark = document.activeElement === button ? seq : undefined;
      button.disabled = true;
    }

    releaseMarkButtons() {
      if (this.closed) return;
      this.p.messages.querySelectorAll('.mark-sensitive:disabled').forEach((b) => { b.disabled = false; });
    }

    pushUrl() {
      if (this.closed) return;
      const url = this.p.pushUrl.value.trim();
      if (!safeHref(url) || url.length > URL_MAX) {
        showError(this.p.error, 'Enter a link that starts with http:// or https:// (at most 2000 characters).');
        this.p.pushUrl.focus();
        return;
      }
      if (!this.sock.send({ type: 'url', url })) {
        showError(this.p.error, 'Not connected: the link was not sent. Try again in a moment.');
        return;
      }
      showError(this.p.error, '');
      this.list.addPendingOther('url', url, 'Link pushed', (n) => this.list.fillLink(n, url, ''));
      this.p.pushUrl.value = '';
    }

    addNote() {
      if (this.closed) return;
      const text = this.p.noteInput.value.trim();
      if (!text) return;
      if (charCount(text) > CHAT_MAX) {
        showError(this.p.error, `A note can have at most ${CHAT_MAX} characters.`);
        return;
      }
      if (!this.sock.send({ type: 'note', text })) {
        showError(this.p.error, 'Not connected: the note was not saved. Try again in a moment.');
        return;
      }
      showError(this.p.error, '');
      this.list.addPendingOther('note', text, `${state.me || 'You'} · private note`, (n) => { n.textContent = text; });
      this.p.noteInput.value = '';
    }

    async upload() {
      const p = this.p;
      const file = p.fileInput.files && p.fileInput.files[0];
      if (!file) {
        showError(p.error, 'Choose a file first.');
        p.fileInput.focus();
        return;
      }
      showError(p.error, '');
      p.fileSend.disabled = true;
      p.progress.max = file.size || 1;
      p.progress.value = 0;
      p.progress.hidden = false;
      p.fileStatus.textContent = `Uploading ${file.name}…`;
      try {
        const r = await uploadFile(this.id, file, (loaded, total) => {
          p.progress.max = total || 1;
          p.progress.value = loaded;
        });
        addFile(p.files, this.id, { name: file.name, size: file.size, ...r });
        p.fileStatus.textContent = `Uploaded ${str(r.name) || file.name}.`;
        p.fileInput.value = '';
      } catch (e) {
        p.fileStatus.textContent = '';
        showError(p.error, e.message);
      } finally {
        p.progress.hidden = true;
        if (!this.closed) p.fileSend.disabled = false;
      }
    }

    async transfer(toQueue) {
      const p = this.p;
      const note = p.transferNote.value.trim();
      const body = {};
      let to;
      if (toQueue) {
        body.to_queue = true;
        to = 'the queue';
      } else {
        to = p.transferAgent.value.trim();
        if (!to) {
          showError(p.error, 'Enter the name of the agent to transfer to.');
          p.transferAgent.focus();
          return;
        }
        body.to_agent = to;
      }
      if (note) body.note = note;
      showError(p.error, '');
      const buttons = [p.transferForm.querySelector('.transfer-send'), p.transferQueue];
      buttons.forEach((b) => { b.disabled = true; });
      try {
        await api('POST', `${API}/sessions/${encodeURIComponent(this.id)}/transfer`, body);
        if (this.closed !== 'transferred') { // the socket's `transferred` may have come first
          this.transferredTo = to;
          this.list.system(`Transferred to ${to}.${note ? ` Note: ${note}` : ''}`);
          this.close('transferred');
        }
      } catch (e) {
        showError(p.error, e.message);
        if (!this.closed) buttons.forEach((b) => { b.disabled = false; });
      }
    }

    async end() {
      const p = this.p;
      p.end.disabled = true;
      showError(p.error, '');
      try {
        await api('POST', `${API}/sessions/${encodeURIComponent(this.id)}/end`);
        if (this.closed !== 'ended') {
          this.endedBy = state.me || 'agent';
          this.list.system('You ended the session.');
          this.close('ended');
        }
      } catch (e) {
        showError(p.error, e.message);
        if (!this.closed) p.end.disabled = false;
      }
    }

    destroy() {
      this.sock.stop();
      this.typingOut.stop();
      clearTimeout(this.theirTypingTimer);
      this.tab.remove();
      this.panel.remove();
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Tabs

  function openSession(id, info, opts = {}) {
    if (typeof id !== 'string' || !id) return null;
    let s = state.sessions.get(id);
    if (!s) {
      state.dismissed.delete(id);
      s = new AgentSession(id, info);
      state.sessions.set(id, s);
      state.order.push(id);
      ui.noSessions.hidden = true;
      s.sock.start();
    } else {
      s.mergeInfo(info);
      // Explicit accept revives any tab but an ended one; the queue snapshot revives only a tab
      // that lost the session (never a replaced one: two windows would take it from each other).
      const revive = opts.revive ? s.closed !== 'ended' :
        (s.closed === 'transferred' || s.closed === 'gone') && Date.now() - s.closedAt > 5000;
      if (s.closed && revive) s.reopen();
    }
    if (opts.select || !state.selected) selectSession(id);
    return s;
  }

  function selectSession(id, focusTab) {
    const target = state.sessions.get(id);
    if (!target) return;
    state.selected = id;
    for (const s of state.sessions.values()) {
      const on = s.id === id;
      s.tab.setAttribute('aria-selected', on ? 'true' : 'false');
      s.tab.tabIndex = on ? 0 : -1;
      s.tab.classList.toggle('selected', on);
      s.panel.hidden = !on;
    }
    target.tab.classList.remove('unread');
    target.tabUnread.textContent = '';
    target.list.scroll(true);
    if (focusTab) target.tab.focus();
    updateTitle();
  }

  function closeSession(id) {
    const s = state.sessions.get(id);
    if (!s) return;
    if (s.closed === 'ended' || s.closed === 'cancelled') state.dismissed.add(id);
    s.destroy();
    state.sessions.delete(id);
    const i = state.order.indexOf(id);
    state.order.splice(i, 1);
    if (state.selected === id) {
      state.selected = null;
      const next = state.order[Math.min(i, state.order.length - 1)];
      if (next) selectSession(next, true);
      else ui.next.focus();
    }
    ui.noSessions.hidden = state.order.length > 0;
    updateTitle();
  }

  function onTabKey(e) {
    const i = state.order.indexOf(e.currentTarget.dataset.sessionId);
    let j = null;
    if (e.key === 'ArrowRight') j = (i + 1) % state.order.length;
    else if (e.key === 'ArrowLeft') j = (i - 1 + state.order.length) % state.order.length;
    else if (e.key === 'Home') j = 0;
    else if (e.key === 'End') j = state.order.length - 1;
    if (j === null) return;
    e.preventDefault();
    selectSession(state.order[j], true);
  }

  function updateTitle() {
    let n = 0;
    for (const s of state.sessions.values()) if (s.tab.classList.contains('unread')) n += 1;
    document.title = `${n ? `(${n}) ` : ''}Custos · Agent console`;
  }

  // ---------------------------------------------------------------------------------------------
  // Canned replies

  function fillCanned(select) {
    while (select.options.length > 1) select.remove(1);
    state.canned.forEach((r, i) => {
      const o = document.createElement('option');
      o.value = String(i);
      o.textContent = str(r && r.title) || `Reply ${i + 1}`;
      select.append(o);
    });
    select.disabled = state.canned.length === 0 || select.closest('.session-panel.closed') !== null;
  }

  async function loadCanned() {
    try {
      const r = await api('GET', `${API}/agent/canned`);
      state.canned = Array.isArray(r.replies) ? r.replies.filter((x) => x && typeof x === 'object') : [];
    } catch (_) {
      state.canned = [];
    }
    for (const s of state.sessions.values()) fillCanned(s.p.canned);
  }

  // ---------------------------------------------------------------------------------------------
  // Queue (Server-Sent Events)

  function setQueueStatus(text, reconnecting) {
    setText(ui.queueStatus, text);
    ui.queueStatus.classList.toggle('reconnecting', !!reconnecting);
  }

  function queueItem(w) {
    const li = el('li', 'queue-item');
    li.dataset.requestId = str(w.request_id);
    const head = el('div', 'qi-head');
    head.append(el('strong', 'qi-name'), el('span', 'qi-wait hint'));
    li.append(head);
    li.append(el('p', 'qi-meta'), el('p', 'qi-question'), el('p', 'qi-ref hint'));
    const b = el('button', 'accept', 'Accept');
    b.type = 'button';
    b.addEventListener('click', () => accept(li.dataset.requestId, li._info, b));
    li.append(b);
    return li;
  }

  function updateQueueItem(li, w, now) {
    li._info = {
      customer: str(w.name), portal: w.portal, skill: w.skill, question: w.question, ref: w.ref,
      status: 'waiting',
    };
    li._waited = Number(w.waited_s) || 0;
    li._at = now;
    const name = str(w.name) || 'Anonymous';
    $('.qi-name', li).textContent = name;
    $('.qi-wait', li).textContent = `waiting ${fmtWaited(li._waited)}`;
    $('.qi-meta', li).textContent = [str(w.portal), str(w.skill)].filter(Boolean).join(' / ');
    $('.qi-question', li).textContent = str(w.question);
    const ref = $('.qi-ref', li);
    ref.textContent = w.ref ? `Ref: ${str(w.ref)}` : '';
    ref.hidden = !w.ref;
    $('.accept', li).setAttribute('aria-label', `Accept request from ${name}`);
  }

  function tickWaits() {
    const now = Date.now();
    ui.queue.querySelectorAll('li.queue-item').forEach((li) => {
      $('.qi-wait', li).textContent = `waiting ${fmtWaited(li._waited + (now - li._at) / 1000)}`;
    });
  }

  function renderQueue(d) {
    if (!d || typeof d !== 'object') return;
    const now = Date.now();
    const waiting = Array.isArray(d.waiting) ? d.waiting.filter((w) => w && typeof w === 'object' && w.request_id) : [];
    const existing = new Map();
    ui.queue.querySelectorAll('li.queue-item').forEach((li) => existing.set(li.dataset.requestId, li));
    const keep = new Set();
    let prev = null;
    for (const w of waiting) {
      const id = str(w.request_id);
      if (keep.has(id)) continue;
      keep.add(id);
      let li = existing.get(id);
      if (!li) li = queueItem(w);
      updateQueueItem(li, w, now);
      // Keep order without moving nodes that are already in place (keeps focus).
      const want = prev ? prev.nextElementSibling : ui.queue.firstElementChild;
      if (want !== li) ui.queue.insertBefore(li, want);
      prev = li;
    }
    for (const [id, li] of existing) {
      if (!keep.has(id)) {
        const hadFocus = li.contains(document.activeElement);
        li.remove();
        if (hadFocus) ui.next.focus();
      }
    }
    const n = keep.size;
    setQueueStatus(n === 0 ? 'Live · no one is waiting' : `Live · ${n} waiting`, false);

    const sessions = Array.isArray(d.sessions) ? d.sessions.filter((s) => s && typeof s === 'object' && s.session_id) : [];
    state.assigned = { at: now, ids: new Set(sessions.map((s) => str(s.session_id))) };
    for (const s of sessions) {
      const id = str(s.session_id);
      if (s.status === 'ended' || s.status === 'cancelled') continue;
      if (!state.sessions.has(id) && state.dismissed.has(id)) continue;
      openSession(id, s, {});
    }
  }

  function startQueueStream() {
    stopQueueStream();
    let es;
    try {
      es = new EventSource(`${API}/queue/stream`);
    } catch (_) {
      retryQueueStream();
      return;
    }
    state.es = es;
    es.addEventListener('queue', (ev) => {
      let d;
      try { d = JSON.parse(ev.data); } catch (_) { return; }
      state.esAttempt = 0;
      renderQueue(d);
    });
    es.onopen = () => {
      state.esAttempt = 0;
      if (ui.queueStatus.classList.contains('reconnecting')) setQueueStatus('Live', false);
    };
    es.onerror = () => {
      if (state.es !== es) return;
      setQueueStatus('Reconnecting…', true);
      // EventSource retries by itself unless the server answered with an error status.
      if (es.readyState === EventSource.CLOSED) retryQueueStream();
    };
  }

  function retryQueueStream() {
    stopQueueStream();
    setQueueStatus('Reconnecting…', true);
    const delay = Math.min(30000, 2000 * 2 ** state.esAttempt);
    state.esAttempt += 1;
    state.esRetry = setTimeout(async () => {
      try {
        await api('GET', `${API}/me`); // a 401 here returns to the login form
        startQueueStream();
      } catch (e) {
        if (state.started && e.status !== 401) retryQueueStream();
      }
    }, delay);
  }

  function stopQueueStream() {
    clearTimeout(state.esRetry);
    state.esRetry = null;
    if (state.es) {
      state.es.close();
      state.es = null;
    }
  }

  async function loadQueueOnce() {
    try {
      renderQueue(await api('GET', `${API}/queue`));
    } catch (e) {
      if (e.status !== 401) showError(ui.consoleError, e.message);
    }
  }

  async function accept(requestId, info, button) {
    button.disabled = true;
    showError(ui.consoleError, '');
    try {
      const r = await api('POST', `${API}/requests/${encodeURIComponent(requestId)}/accept`);
      const li = button.closest('li');
      if (li) li.remove();
      openSession(str(r.session_id) || requestId, info, { select: true, revive: true });
      focusSelectedInput();
    } catch (e) {
      showError(ui.consoleError, e.message);
      button.disabled = false;
    }
  }

  async function takeNext() {
    ui.next.disabled = true;
    ui.nextStatus.textContent = '';
    showError(ui.consoleError, '');
    try {
      const r = await api('POST', `${API}/queue/next`);
      const sid = str(r.session_id);
      const li = ui.queue.querySelector(`li.queue-item[data-request-id="${CSS.escape(sid)}"]`);
      const info = li ? li._info : undefined;
      if (li) li.remove();
      openSession(sid, info, { select: true, revive: true });
      focusSelectedInput();
    } catch (e) {
      if (e.status === 409) ui.nextStatus.textContent = 'Nothing waiting that you can take right now.';
      else showError(ui.consoleError, e.message);
    } finally {
      ui.next.disabled = false;
    }
  }

  function focusSelectedInput() {
    const s = state.sessions.get(state.selected);
    if (s && !s.closed) s.p.input.focus();
  }

  // ---------------------------------------------------------------------------------------------
  // Codes, presence

  async function newCode(e) {
    e.preventDefault();
    const ref = ui.codeRef.value.trim();
    ui.codeNew.disabled = true;
    showError(ui.consoleError, '');
    try {
      const r = await api('POST', `${API}/codes`, ref ? { ref } : {});
      ui.codeValue.textContent = str(r.code);
      const exp = r.expires_at ? new Date(r.expires_at) : null;
      if (exp && !Number.isNaN(exp.getTime())) {
        const mins = Math.max(0, Math.round((exp.getTime() - Date.now()) / 60000));
        ui.codeExpiry.textContent = `Valid until ${fmtTime(r.expires_at)} (about ${mins} min)${ref ? ` · ref ${ref}` : ''}`;
      } else {
        ui.codeExpiry.textContent = str(r.expires_at) ? `Valid until ${str(r.expires_at)}` : '';
      }
      ui.codeRef.value = '';
    } catch (err) {
      showError(ui.consoleError, err.message);
    } finally {
      ui.codeNew.disabled = false;
    }
  }

  let presenceValue = 'available';

  async function setPresence(status) {
    try {
      await api('POST', `${API}/agent/presence`, { status });
      presenceValue = status;
      ui.presence.value = status;
    } catch (e) {
      ui.presence.value = presenceValue;
      if (e.status !== 401) showError(ui.consoleError, e.message);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Login, password change, logout

  function showOnly(which) {
    ui.boot.hidden = true;
    ui.login.hidden = which !== 'login';
    ui.passwordForm.hidden = which !== 'password';
    ui.console.hidden = which !== 'console';
  }

  function showLogin(message) {
    stopConsole();
    showOnly('login');
    showError(ui.loginError, message || '');
    ui.loginName.focus();
  }

  function showPasswordForm() {
    stopConsole();
    showOnly('password');
    showError(ui.pwError, '');
    ui.pwCurrent.focus();
  }

  function onUnauthorized() {
    if (ui.login.hidden || state.started) showLogin('Your sign-in has expired. Please sign in again.');
  }

  function startConsole(name) {
    state.me = str(name);
    ui.whoami.textContent = state.me;
    showOnly('console');
    if (state.started) return;
    state.started = true;
    showError(ui.consoleError, '');
    ui.presence.value = 'available';
    setPresence('available');
    loadCanned();
    loadQueueOnce();
    startQueueStream();
    clearInterval(state.waitTicker);
    state.waitTicker = setInterval(tickWaits, 5000);
  }

  function stopConsole() {
    if (!state.started) return;
    state.started = false;
    stopQueueStream();
    clearInterval(state.waitTicker);
    for (const s of state.sessions.values()) s.destroy();
    state.sessions.clear();
    state.order = [];
    state.selected = null;
    state.assigned = null;
    ui.queue.textContent = '';
    ui.noSessions.hidden = false;
    ui.codeValue.textContent = '';
    ui.codeExpiry.textContent = '';
    updateTitle();
  }

  async function onLogin(e) {
    e.preventDefault();
    const name = ui.loginName.value.trim();
    const password = ui.loginPassword.value;
    if (!name || !password) {
      showError(ui.loginError, 'Enter your name and password.');
      (name ? ui.loginPassword : ui.loginName).focus();
      return;
    }
    showError(ui.loginError, '');
    ui.loginSubmit.disabled = true;
    try {
      const r = await api('POST', `${API}/auth/login`, { name, password }, { noAuthRedirect: true });
      ui.loginPassword.value = '';
      const who = (r.user && r.user.name) || r.name || name;
      state.me = str(who);
      if (r.password_change_required) showPasswordForm();
      else startConsole(who);
    } catch (err) {
      showError(ui.loginError, err.message);
      ui.loginPassword.select();
      ui.loginPassword.focus();
    } finally {
      ui.loginSubmit.disabled = false;
    }
  }

  async function onPasswordChange(e) {
    e.preventDefault();
    const current = ui.pwCurrent.value;
    const next = ui.pwNew.value;
    if (!current || !next) {
      showError(ui.pwError, 'Enter your current password and a new one.');
      (current ? ui.pwNew : ui.pwCurrent).focus();
      return;
    }
    showError(ui.pwError, '');
    ui.pwSubmit.disabled = true;
    try {
      await api('POST', `${API}/auth/password`, { current_password: current, new_password: next }, { noAuthRedirect: true });
      ui.pwCurrent.value = '';
      ui.pwNew.value = '';
      let name = state.me;
      if (!name) {
        const me = await api('GET', `${API}/me`);
        name = me.name;
      }
      startConsole(name);
    } catch (err) {
      if (err.status === 401) {
        showLogin(err.message);
        return;
      }
      showError(ui.pwError, err.message);
    } finally {
      ui.pwSubmit.disabled = false;
    }
  }

  async function onLogout() {
    ui.logout.disabled = true;
    showError(ui.consoleError, '');
    try {
      await api('POST', `${API}/agent/presence`, { status: 'offline' }, { noAuthRedirect: true }).catch(() => {});
      await api('POST', `${API}/auth/logout`, undefined, { noAuthRedirect: true });
      state.me = null;
      showLogin('');
    } catch (e) {
      if (e.status === 401) {
        state.me = null;
        showLogin('');
      } else {
        showError(ui.consoleError, e.message);
      }
    } finally {
      ui.logout.disabled = false;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Boot

  async function boot() {
    const ids = {
      boot: 'boot', login: 'login', loginForm: 'login-form', loginName: 'login-name',
      loginPassword: 'login-password', loginSubmit: 'login-submit', loginError: 'login-error',
      passwordForm: 'password-form', pwCurrent: 'pw-current', pwNew: 'pw-new', pwSubmit: 'pw-submit',
      pwError: 'pw-error', console: 'console', whoami: 'whoami', logout: 'logout', presence: 'presence',
      consoleError: 'console-error', queue: 'queue', queueStatus: 'queue-status', next: 'next',
      nextStatus: 'next-status', codeForm: 'code-form', codeRef: 'code-ref', codeNew: 'code-new',
      codeValue: 'code-value', codeExpiry: 'code-expiry', tabs: 'tabs', panels: 'panels',
      noSessions: 'no-sessions', template: 'panel-template',
    };
    for (const [k, id] of Object.entries(ids)) ui[k] = document.getElementById(id);

    ui.loginForm.addEventListener('submit', onLogin);
    ui.passwordForm.addEventListener('submit', onPasswordChange);
    ui.logout.addEventListener('click', onLogout);
    ui.presence.addEventListener('change', () => setPresence(ui.presence.value));
    ui.next.addEventListener('click', takeNext);
    ui.codeForm.addEventListener('submit', newCode);

    try {
      const me = await api('GET', `${API}/me`, undefined, { noAuthRedirect: true });
      state.me = str(me.name);
      if (me.password_change_required) showPasswordForm();
      else startConsole(me.name);
    } catch (e) {
      showLogin(e.status === 401 ? '' : e.message);
    }
  }

  boot();
})();
