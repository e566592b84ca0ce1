// The tenant admin dashboard: every view is rendered from the public API (/v1/*) with the
// session cookie. Text is only ever set as text (textContent, attribute values), never parsed
// as HTML, so names like `<img src=x onerror=alert(1)>` show as written.
'use strict';

(() => {
  const main = document.getElementById('main');
  let session = null;

  // ---- DOM -------------------------------------------------------------------------------

  /** An element with attributes (`on…` functions become listeners) and children (strings
   * become text nodes; null and false are skipped). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
      else if (v === true) node.setAttribute(k, '');
      else node.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function loading(what) {
    return el('p', { class: 'loading', role: 'status' }, `Loading ${what || ''}…`);
  }

  function problemBox(err) {
    const title = err.problem && err.problem.title ? err.problem.title : 'Something went wrong';
    const detail = err.problem && err.problem.detail ? err.problem.detail : String(err.message || err);
    return el('div', { class: 'error', role: 'alert' },
      el('strong', {}, title), ' ', detail,
      err.problem && err.problem.code ? el('code', {}, ` (${err.problem.code})`) : null);
  }

  function notice(text) {
    return el('div', { class: 'notice', role: 'status' }, text);
  }

  /** A time as "3 min ago", with the absolute local and UTC time on hover and for readers. */
  function when(iso) {
    if (!iso) return el('span', { class: 'muted' }, '—');
    const t = new Date(iso);
    const secs = Math.round((t.getTime() - Date.now()) / 1000);
    const abs = Math.abs(secs);
    const units = [['year', 31536000], ['month', 2592000], ['day', 86400], ['hour', 3600], ['minute', 60], ['second', 1]];
    let text = 'just now';
    for (const [unit, size] of units) {
      if (abs >= size) {
        text = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' }).format(Math.trunc(secs / size), unit);
        break;
      }
    }
    return el('time', { datetime: t.toISOString(), title: `${t.toLocaleString()} (${t.toISOString()})` }, text);
  }

  function table(caption, headers, rows, empty) {
    if (!rows.length) return el('p', { class: 'empty' }, empty);
    return el('div', { class: 'table-wrap' }, el('table', {},
      el('caption', {}, caption),
      el('thead', {}, el('tr', {}, headers.map(h => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, rows.map(r => el('tr', {}, r.map(c => el('td', {}, c)))))));
  }

  function field(label, control, hint) {
    const id = control.id || `f-${Math.random().toString(36).slice(2)}`;
    control.id = id;
    return el('div', { class: 'field' }, el('label', { for: id }, label), control,
      hint ? el('small', {}, hint) : null);
  }

  function select(name, options, value) {
    return el('select', { name }, options.map(([v, label]) =>
      el('option', { value: v, selected: v === value }, label)));
  }

  const canWrite = () => session && session.scope === 'admin';

  // ---- API -------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, problem) {
      super(problem.detail || problem.title || `HTTP ${status}`);
      this.status = status;
      this.problem = problem;
    }
  }

  async function api(method, path, options) {
    const opts = options || {};
    const headers = { Accept: 'application/json', ...(opts.headers || {}) };
    const init = { method, credentials: 'same-origin', headers };
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    const res = await fetch(path, init);
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!res.ok) {
      const err = new ApiError(res.status, data || { title: `HTTP ${res.status}` });
      if (res.status === 401 && session) signedOut(err);
      throw err;
    }
    return { data, etag: res.headers.get('ETag') };
  }

  const enc = encodeURIComponent;

  // ---- routing ---------------------------------------------------------------------------

  function go(path, params) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v) qs.set(k, v);
    const s = qs.toString();
    location.hash = s ? `${path}?${s}` : path;
  }

  const routes = [
    [/^#?\/?$/, overview, '#/'],
    [/^#\/conversations$/, conversations, '#/conversations'],
    [/^#\/conversations\/([0-9a-f]{24})$/, conversation, '#/conversations'],
    [/^#\/conversations\/([0-9a-f]{24})\/members\/([^/?]+)$/, member, '#/conversations'],
    [/^#\/webhooks$/, webhooks, '#/webhooks'],
  ];

  let rendering = 0;

  async function render() {
    const [path, qs] = location.hash.split('?');
    const params = new URLSearchParams(qs || '');
    const ticket = ++rendering;
    const view = el('div', {});
    main.replaceChildren(loading());
    let found = null;
    for (const [re, fn, section] of routes) {
      const m = path.match(re);
      if (m) { found = [fn, m.slice(1).map(decodeURIComponent), section]; break; }
    }
    for (const a of document.querySelectorAll('#nav a')) {
      if (found && a.getAttribute('href') === found[2]) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    try {
      if (!found) {
        view.append(el('h1', {}, 'Not found'), el('p', {}, 'No such page. ', el('a', { href: '#/' }, 'Back to the overview')));
      } else {
        await found[0](view, params, ...found[1]);
      }
    } catch (err) {
      view.append(problemBox(err));
    }
    if (ticket === rendering) {
      main.replaceChildren(view);
      const h = main.querySelector('h1');
      if (h) document.title = `${h.textContent} · Roster dashboard`;
    }
  }

  // ---- views -----------------------------------------------------------------------------

  async function overview(view) {
    view.append(el('h1', {}, 'Overview'));
    const [convs, hooks] = await Promise.allSettled([
      api('GET', '/v1/conversations?limit=10'),
      api('GET', '/v1/webhooks'),
    ]);
    const cards = el('div', { class: 'cards' });
    cards.append(el('section', { class: 'card', 'aria-labelledby': 'ov-session' },
      el('h2', { id: 'ov-session' }, 'This session'),
      el('dl', {},
        el('dt', {}, 'Tenant'), el('dd', {}, session.tenant_id),
        el('dt', {}, 'Access'), el('dd', {}, session.scope === 'admin' ? 'Administer' : 'Read only'),
        session.user_id ? [el('dt', {}, 'Signed in as'), el('dd', {}, session.user_id)] : null,
        el('dt', {}, 'Ends'), el('dd', {}, when(session.expires_at)))));
    const hookCard = el('section', { class: 'card', 'aria-labelledby': 'ov-hooks' },
      el('h2', { id: 'ov-hooks' }, 'Webhooks'));
    if (hooks.status === 'fulfilled') {
      const items = hooks.value.data.items;
      const failing = items.filter(w => w.failing_since).length;
      const disabled = items.filter(w => !w.enabled).length;
      hookCard.append(el('p', { class: failing ? 'bad' : 'good' },
        items.length ? `${items.length} endpoints: ${failing} failing, ${disabled} disabled` : 'No endpoints.'),
        el('a', { href: '#/webhooks' }, 'See webhooks'));
    } else hookCard.append(problemBox(hooks.reason));
    cards.append(hookCard);
    view.append(cards);
    const recent = el('section', { 'aria-labelledby': 'ov-convs' }, el('h2', { id: 'ov-convs' }, 'Conversations'));
    if (convs.status === 'fulfilled') {
      recent.append(conversationTable(convs.value.data.items, 'The first conversations of the directory'),
        el('a', { href: '#/conversations' }, 'All conversations'));
    } else recent.append(problemBox(convs.reason));
    view.append(recent);
  }

  function conversationTable(items, caption) {
    return table(caption, ['Name', 'Type', 'Join policy', 'Members', 'Last message'], items.map(c => [
      el('a', { href: `#/conversations/${c.id}` }, c.name || '(no name)'),
      c.type, c.settings ? c.settings.join_policy : '', String(c.member_count), when(c.last_message_at),
    ]), 'No conversations match.');
  }

  async function conversations(view, params) {
    view.append(el('h1', {}, 'Conversations'));
    const name = el('input', { type: 'search', name: 'name', value: params.get('name') || '', maxlength: 100, autocomplete: 'off' });
    const type = select('type', [['', 'Any type'], ['group', 'Group'], ['direct', 'Direct']], params.get('type') || '');
    const policy = select('policy', [['', 'Any join policy'], ['open', 'Open'], ['request', 'On request'], ['invite', 'Invite only'], ['closed', 'Closed']], params.get('policy') || '');
    const form = el('form', { class: 'filters', role: 'search', onsubmit: e => {
      e.preventDefault();
      go('#/conversations', { name: name.value.trim(), type: type.value, policy: policy.value });
    } }, field('Name starts with', name), field('Type', type), field('Join policy', policy),
    el('button', { type: 'submit' }, 'Search'));
    view.append(form);
    const q = new URLSearchParams({ limit: '50' });
    if (params.get('name')) q.set('name_prefix', params.get('name'));
    if (params.get('type')) q.set('type', params.get('type'));
    if (params.get('policy')) q.set('join_policy', params.get('policy'));
    if (params.get('cursor')) q.set('cursor', params.get('cursor'));
    const { data } = await api('GET', `/v1/conversations?${q}`);
    view.append(conversationTable(data.items, 'Conversations'));
    view.append(pager(params, data.next_cursor, '#/conversations'));
  }

  function pager(params, next, path) {
    const nav = el('nav', { class: 'pager', 'aria-label': 'Pages' });
    if (params.get('cursor')) {
      const first = Object.fromEntries(params);
      delete first.cursor;
      nav.append(el('a', { href: '#', onclick: e => { e.preventDefault(); go(path, first); } }, 'First page'));
    }
    if (next) {
      const more = { ...Object.fromEntries(params), cursor: next };
      nav.append(el('a', { href: '#', onclick: e => { e.preventDefault(); go(path, more); } }, 'Next page'));
    }
    return nav;
  }

  async function conversation(view, params, id) {
    const { data: c, etag } = await api('GET', `/v1/conversations/${id}`);
    view.append(el('p', { class: 'crumbs' }, el('a', { href: '#/conversations' }, 'Conversations'), ' / '),
      el('h1', {}, c.name || '(no name)'));
    view.append(conversationInfo(c, etag));
    view.append(await memberSection(c, params));
  }

  function conversationInfo(c, etag) {
    const section = el('section', { 'aria-labelledby': 'c-info' }, el('h2', { id: 'c-info' }, 'About'));
    section.append(el('dl', { class: 'facts' },
      el('dt', {}, 'Id'), el('dd', {}, el('code', {}, c.id)),
      el('dt', {}, 'Type'), el('dd', {}, c.type),
      el('dt', {}, 'Members'), el('dd', {}, String(c.member_count)),
      el('dt', {}, 'Created'), el('dd', {}, when(c.created_at)),
      el('dt', {}, 'Last message'), el('dd', {}, when(c.last_message_at))));
    if (!canWrite() || c.type !== 'group') return section;
    const name = el('input', { name: 'name', value: c.name, required: true, maxlength: 200 });
    const description = el('textarea', { name: 'description', rows: 3, maxlength: 2000 }, c.description || '');
    const policy = select('join_policy', [['open', 'Open'], ['request', 'On request'], ['invite', 'Invite only'], ['closed', 'Closed']], c.settings.join_policy);
    const status = el('div', { 'aria-live': 'polite' });
    const form = el('form', { class: 'edit', onsubmit: async e => {
      e.preventDefault();
      status.replaceChildren(loading('saving'));
      try {
        await api('PATCH', `/v1/conversations/${c.id}`, {
          headers: { 'If-Match': etag },
          body: { name: name.value, description: description.value || null, join_policy: policy.value },
        });
        status.replaceChildren(notice('Saved.'));
        render();
      } catch (err) {
        if (err.status === 412) {
          status.replaceChildren(el('div', { class: 'error', role: 'alert' },
            'Someone changed this conversation since you opened it; nothing was saved. ',
            el('button', { type: 'button', onclick: () => render() }, 'Load the current version')));
        } else status.replaceChildren(problemBox(err));
      }
    } }, field('Name', name), field('Description', description), field('Join policy', policy),
    el('button', { type: 'submit' }, 'Save'), status);
    section.append(el('details', {}, el('summary', {}, 'Edit'), form));
    return section;
  }

  async function memberSection(c, params) {
    const section = el('section', { 'aria-labelledby': 'c-members' }, el('h2', { id: 'c-members' }, 'Members'));
    const name = el('input', { type: 'search', name: 'q', value: params.get('q') || '', maxlength: 100, autocomplete: 'off' });
    const status = select('status', [['active,muted', 'Present'], ['active', 'Active'], ['muted', 'Muted'], ['banned', 'Banned'], ['left,removed', 'Departed']], params.get('status') || 'active,muted');
    const path = `#/conversations/${c.id}`;
    section.append(el('form', { class: 'filters', role: 'search', onsubmit: e => {
      e.preventDefault();
      go(path, { q: name.value.trim(), status: status.value });
    } }, field('Name starts with', name), field('Status', status), el('button', { type: 'submit' }, 'Find')));
    const q = new URLSearchParams({ limit: '50', status: params.get('status') || 'active,muted' });
    if (params.get('q')) q.set('name_prefix', params.get('q'));
    if (params.get('cursor')) q.set('cursor', params.get('cursor'));
    const { data } = await api('GET', `/v1/conversations/${c.id}/members?${q}`);
    section.append(table('Members', ['Name', 'User id', 'Role', 'Status', 'Joined'], data.items.map(m => [
      el('a', { href: `#/conversations/${c.id}/members/${enc(m.user_id)}` }, m.display_name || m.user_id),
      el('code', {}, m.user_id), m.role, m.status, when(m.activity && m.activity.joined_at),
    ]), params.get('q') ? 'No member’s name starts with that.' : 'No members with this status.'));
    section.append(pager(params, data.next_cursor, path));
    return section;
  }

  async function member(view, params, id, user) {
    const base = `/v1/conversations/${id}/members/${enc(user)}`;
    const [{ data: c }, { data: m }, roles] = await Promise.all([
      api('GET', `/v1/conversations/${id}`),
      api('GET', base),
      api('GET', '/v1/roles').then(r => r.data, () => null),
    ]);
    view.append(el('p', { class: 'crumbs' }, el('a', { href: '#/conversations' }, 'Conversations'), ' / ',
      el('a', { href: `#/conversations/${id}` }, c.name || '(no name)'), ' / '),
    el('h1', {}, m.display_name || m.user_id));
    const flags = Object.entries(m.permissions || {}).filter(([, v]) => v === true).map(([k]) => k);
    const mod = m.moderation || {};
    const gone = m.departure || {};
    view.append(el('dl', { class: 'facts' },
      el('dt', {}, 'User id'), el('dd', {}, el('code', {}, m.user_id)),
      el('dt', {}, 'Role'), el('dd', {}, m.role),
      el('dt', {}, 'Status'), el('dd', {}, m.status),
      el('dt', {}, 'Joined'), el('dd', {}, when(m.activity && m.activity.joined_at)),
      el('dt', {}, 'Last message'), el('dd', {}, when(m.activity && m.activity.last_message_at)),
      el('dt', {}, 'Permissions'), el('dd', {}, flags.length ? flags.join(', ') : 'none'),
      m.status === 'banned' ? [el('dt', {}, 'Banned until'), el('dd', {}, gone.banned_until ? when(gone.banned_until) : 'lifted by hand')] : null,
      gone.removal_reason ? [el('dt', {}, m.status === 'banned' ? 'Ban reason' : 'Removal reason'), el('dd', {}, gone.removal_reason)] : null,
      m.status === 'muted' ? [el('dt', {}, 'Muted until'), el('dd', {}, mod.muted_until ? when(mod.muted_until) : 'lifted by hand')] : null,
      mod.reason ? [el('dt', {}, 'Mute reason'), el('dd', {}, mod.reason)] : null));
    if (!canWrite()) {
      view.append(el('p', { class: 'muted' }, 'This session may look only.'));
      return;
    }
    const status = el('div', { 'aria-live': 'polite' });
    const act = (label, fn) => async e => {
      e.preventDefault();
      status.replaceChildren(loading(label));
      try { await fn(); status.replaceChildren(notice(`${label}: done.`)); await render(); } catch (err) { status.replaceChildren(problemBox(err)); }
    };
    const actions = el('section', { 'aria-labelledby': 'm-actions' }, el('h2', { id: 'm-actions' }, 'Actions'), status);
    if (roles && roles.roles) {
      const role = select('role', roles.roles.map(r => [r.name, r.name]), m.role);
      actions.append(el('form', { class: 'inline', onsubmit: act('Role change', () => api('PATCH', base, { body: { role: role.value } })) },
        field('Role', role, 'Only roles below your own, as the API enforces'), el('button', { type: 'submit' }, 'Change role')));
    }
    const until = el('input', { type: 'datetime-local', name: 'until' });
    const reason = el('input', { name: 'reason', maxlength: 500 });
    const body = () => ({ until: until.value ? new Date(until.value).toISOString() : undefined, reason: reason.value || undefined });
    actions.append(el('form', { class: 'inline', onsubmit: e => e.preventDefault() },
      field('Until (empty: until lifted)', until), field('Reason', reason),
      m.status === 'banned'
        ? el('button', { type: 'button', onclick: act('Unban', () => api('DELETE', `${base}/ban`)) }, 'Unban')
        : el('button', { type: 'button', onclick: act('Ban', () => api('POST', `${base}/ban`, { body: body() })) }, 'Ban'),
      m.status === 'muted'
        ? el('button', { type: 'button', onclick: act('Unmute', () => api('DELETE', `${base}/mute`)) }, 'Unmute')
        : el('button', { type: 'button', onclick: act('Mute', () => api('POST', `${base}/mute`, { body: body() })) }, 'Mute')));
    if (m.status === 'active' || m.status === 'muted') {
      actions.append(el('button', { type: 'button', class: 'danger', onclick: act('Remove', async () => {
        if (!window.confirm(`Remove ${m.display_name || m.user_id} from ${c.name}?`)) throw new Error('Not removed.');
        await api('DELETE', base);
      }) }, 'Remove from conversation'));
    }
    view.append(actions);
  }

  async function webhooks(view) {
    view.append(el('h1', {}, 'Webhooks'));
    const { data } = await api('GET', '/v1/webhooks');
    const status = el('div', { 'aria-live': 'polite' });
    view.append(status, table('Webhook endpoints', ['URL', 'State', 'Last success', 'Failing since', ''], data.items.map(w => [
      el('code', {}, w.url),
      w.enabled ? 'enabled' : `disabled${w.disabled_reason ? `: ${w.disabled_reason}` : ''}`,
      when(w.last_success_at), when(w.failing_since),
      canWrite() ? el('button', { type: 'button', onclick: async () => {
        try { await api('PATCH', `/v1/webhooks/${w.id}`, { body: { enabled: !w.enabled } }); await render(); } catch (err) { status.replaceChildren(problemBox(err)); }
      } }, w.enabled ? 'Disable' : 'Enable') : '',
    ]), 'No webhook endpoints.'));
  }

  // ---- signing in and out ----------------------------------------------------------------

  function signedOut(err) {
    session = null;
    document.getElementById('nav').hidden = true;
    document.getElementById('signout').hidden = true;
    document.getElementById('who').textContent = '';
    main.replaceChildren(el('h1', {}, 'Signed out'),
      err ? problemBox(err) : null,
      el('p', {}, 'Ask your service for a new dashboard link (POST /v1/dashboard/links with a server token) and open it here.'));
  }

  async function signIn() {
    const m = location.hash.match(/code=([A-Za-z0-9_-]+)/);
    try {
      if (m) {
        // The code works once: take it out of the address bar (and history) at once.
        history.replaceState(null, '', `${location.pathname}#/`);
        session = (await api('POST', '/dashboard/session', { body: { code: m[1] } })).data;
      } else {
        session = (await api('GET', '/dashboard/session')).data;
      }
    } catch (err) {
      signedOut(err);
      return;
    }
    document.getElementById('nav').hidden = false;
    document.getElementById('signout').hidden = false;
    document.getElementById('who').textContent =
      `${session.tenant_id}${session.user_id ? ` · ${session.user_id}` : ''}${session.scope === 'read' ? ' · read only' : ''}`;
    await render();
  }

  document.getElementById('skip').addEventListener('click', e => { e.preventDefault(); main.focus(); });
  document.getElementById('signout').addEventListener('click', async () => {
    try { await api('DELETE', '/dashboard/session'); } catch (_) { /* signed out either way */ }
    signedOut(null);
  });
  // A link opened in a tab that shows the dashboard already changes only the fragment.
  window.addEventListener('hashchange', () => {
    if (location.hash.includes('code=')) signIn();
    else if (session) render();
  });
  signIn();
})();
