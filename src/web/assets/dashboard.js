// Custos supervisor dashboard: representatives and queues, live from the monitors event stream
// (/api/v1/monitors/stream, one event at least every second). Plain ES2020, no dependencies;
// everything from the network is inserted with textContent.
'use strict';

(() => {
  const { API, el, str, fmtWaited, showError, setText, api, setAuthFailureHandler } = window.CustosCommon;

  const ui = {};
  let source = null;
  let retry = null;

  function num(v) {
    const n = Number(v);
    return Number.isFinite(n) && n >= 0 ? Math.floor(n) : 0;
  }

  function clock(s) {
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = String(s % 60).padStart(2, '0');
    return h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
  }

  function row(cells, cls) {
    const tr = el('tr', cls);
    for (const c of cells) tr.append(el('td', '', c));
    return tr;
  }

  function render(d) {
    const agents = Array.isArray(d.agents) ? d.agents.filter((a) => a && typeof a === 'object') : [];
    const queues = Array.isArray(d.queues) ? d.queues.filter((q) => q && typeof q === 'object') : [];
    agents.sort((a, b) => str(a.name).localeCompare(str(b.name)));
    const reps = agents.map((a) => {
      const tr = row([str(a.name), str(a.status), clock(num(a.since_s)), String(num(a.sessions))], `status-${str(a.status)}`);
      tr.dataset.agent = str(a.name);
      return tr;
    });
    ui.reps.replaceChildren(...reps);
    ui.noReps.hidden = reps.length > 0;
    const active = queues.map((q) => {
      const tr = row([str(q.portal), str(q.skill), String(num(q.waiting)), fmtWaited(num(q.longest_wait_s))], num(q.waiting) ? 'busy' : '');
      tr.dataset.queue = `${str(q.portal)}/${str(q.skill)}`;
      return tr;
    });
    ui.queues.replaceChildren(...active);
    setText(ui.totalAvailable, String(agents.filter((a) => a.status === 'available').length));
    setText(ui.totalBusy, String(agents.filter((a) => num(a.sessions) > 0).length));
    setText(ui.totalWaiting, String(queues.reduce((n, q) => n + num(q.waiting), 0)));
    setText(ui.totalLongest, clock(queues.reduce((m, q) => Math.max(m, num(q.longest_wait_s)), 0)));
    setText(ui.updated, `Updated ${new Date().toLocaleTimeString()}`);
  }

  function startStream() {
    stopStream();
    setText(ui.streamStatus, 'Connecting…');
    source = new EventSource(`${API}/monitors/stream`);
    source.addEventListener('monitors', (e) => {
      setText(ui.streamStatus, 'Live');
      try {
        render(JSON.parse(e.data));
      } catch (err) {
        showError(ui.boardError, `An update could not be read: ${err.message}`);
      }
    });
    source.onerror = async () => {
      stopStream();
      setText(ui.streamStatus, 'Connection lost, reconnecting…');
      try {
        await api('GET', `${API}/monitors/agents`); // a 401 or 403 here says why
        retry = setTimeout(startStream, 2000);
      } catch (err) {
        if (err.status === 403) showError(ui.boardError, err.message);
        else if (err.status !== 401) retry = setTimeout(startStream, 5000);
      }
    };
  }

  function stopStream() {
    clearTimeout(retry);
    if (source) source.close();
    source = null;
  }

  function show(which, message) {
    ui.boot.hidden = true;
    ui.login.hidden = which !== 'login';
    ui.board.hidden = which !== 'board';
    if (which === 'login') {
      stopStream();
      showError(ui.loginError, message || '');
      ui.loginName.focus();
    }
  }

  function startBoard(me) {
    if (me.password_change_required) {
      show('login', 'Your password must be changed first: sign in at /agent and choose a new one.');
      return;
    }
    setText(ui.whoami, str(me.name));
    show('board');
    startStream();
  }

  async function onLogin(e) {
    e.preventDefault();
    const name = ui.loginName.value.trim();
    const password = ui.loginPassword.value;
    if (!name || !password) {
      showError(ui.loginError, 'Enter your name and password.');
      return;
    }
    ui.loginSubmit.disabled = true;
    try {
      const r = await api('POST', `${API}/auth/login`, { name, password }, { noAuthRedirect: true });
      ui.loginPassword.value = '';
      startBoard({ name: (r.user && r.user.name) || name, password_change_required: r.password_change_required });
    } catch (err) {
      showError(ui.loginError, err.message);
    } finally {
      ui.loginSubmit.disabled = false;
    }
  }

  async function onLogout() {
    stopStream();
    await api('POST', `${API}/auth/logout`, undefined, { noAuthRedirect: true }).catch(() => {});
    // A wall screen may be shared: the next person starts from an empty form.
    ui.loginForm.reset();
    showError(ui.boardError, '');
    show('login', '');
  }

  async function boot() {
    const ids = {
      boot: 'boot', login: 'login', loginForm: 'login-form', loginName: 'login-name',
      loginPassword: 'login-password', loginSubmit: 'login-submit', loginError: 'login-error',
      board: 'board', whoami: 'whoami', logout: 'logout', streamStatus: 'stream-status',
      boardError: 'board-error', totalAvailable: 'total-available', totalBusy: 'total-busy',
      totalWaiting: 'total-waiting', totalLongest: 'total-longest', noReps: 'no-reps', updated: 'updated',
    };
    for (const [k, id] of Object.entries(ids)) ui[k] = document.getElementById(id);
    ui.reps = document.querySelector('#reps tbody');
    ui.queues = document.querySelector('#queues tbody');
    ui.loginForm.addEventListener('submit', onLogin);
    ui.logout.addEventListener('click', onLogout);
    setAuthFailureHandler((status) => {
      if (status === 401) show('login', 'Your sign-in has expired. Please sign in again.');
    });
    try {
      startBoard(await api('GET', `${API}/me`, undefined, { noAuthRedirect: true }));
    } catch {
      show('login', '');
    }
  }

  document.addEventListener('DOMContentLoaded', boot);
})();
