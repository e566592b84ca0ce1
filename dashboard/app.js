// The tenant admin dashboard: every view is rendered from the public API (/v1/*) with the
// session cookie. Text is only ever set as text (textContent, attribute values), never parsed
// as HTML, so names like `<img src=x onerror=alert(1)>` show as written.
'use strict';

(() => {
  const main = document.getElementById('main');
  // One script, two consoles: a tenant's dashboard (/dashboard/) and the operators' console
  // (/admin/ on the operators' listener).
  const platform = document.body.dataset.console === 'platform';
  const sessionPath = platform ? '/admin/session' : '/dashboard/session';
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

  const canWrite = () => session && (session.scope === 'admin' || session.scope === 'platform');

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

  const tenantRoutes = [
    [/^#?\/?$/, overview, '#/'],
    [/^#\/conversations$/, conversations, '#/conversations'],
    [/^#\/conversations\/([0-9a-f]{24})$/, conversation, '#/conversations'],
    [/^#\/conversations\/([0-9a-f]{24})\/ways-in$/, waysIn, '#/conversations'],
    [/^#\/conversations\/([0-9a-f]{24})\/media$/, media, '#/conversations'],
    [/^#\/conversations\/([0-9a-f]{24})\/audit$/, audit, '#/conversations'],
    [/^#\/conversations\/([0-9a-f]{24})\/events$/, liveEvents, '#/conversations'],
    [/^#\/conversations\/([0-9a-f]{24})\/members\/([^/?]+)$/, member, '#/conversations'],
    [/^#\/roles$/, roles, '#/roles'],
    [/^#\/webhooks$/, webhooks, '#/webhooks'],
    [/^#\/webhooks\/([0-9a-f]{24})$/, webhook, '#/webhooks'],
    [/^#\/users$/, users, '#/users'],
    [/^#\/users\/([^/?]+)$/, user, '#/users'],
  ];
  const platformRoutes = [
    [/^#?\/?$/, tenants, '#/'],
    [/^#\/tenants\/([^/?]+)$/, tenant, '#/'],
    [/^#\/audit$/, platformAudit, '#/audit'],
  ];
  const routes = platform ? platformRoutes : tenantRoutes;
  const sections = platform
    ? [['#/', 'Tenants'], ['#/audit', 'Platform audit']]
    : [['#/', 'Overview'], ['#/conversations', 'Conversations'], ['#/roles', 'Roles'], ['#/webhooks', 'Webhooks'], ['#/users', 'Users']];
  document.getElementById('nav').replaceChildren(...sections.map(([href, label]) => el('a', { href }, label)));

  // Work a view leaves running (an event stream), stopped when another view is shown.
  let cleanups = [];

  let rendering = 0;

  async function render() {
    const [path, qs] = location.hash.split('?');
    const params = new URLSearchParams(qs || '');
    const ticket = ++rendering;
    for (const stop of cleanups) stop();
    cleanups = [];
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
    const [convs, hooks, trail, requests, oldest] = await Promise.allSettled([
      api('GET', '/v1/conversations?limit=10'),
      api('GET', '/v1/webhooks'),
      api('GET', '/v1/audit?limit=10'),
      api('GET', '/v1/join-requests?limit=50'),
      api('GET', '/v1/events?after=0&limit=1'),
    ]);
    const cards = el('div', { class: 'cards' });
    cards.append(el('section', { class: 'card', 'aria-labelledby': 'ov-session' },
      el('h2', { id: 'ov-session' }, 'This session'),
      el('dl', {},
        el('dt', {}, 'Tenant'), el('dd', {}, session.tenant_id),
        el('dt', {}, 'Access'), el('dd', {}, session.scope === 'admin' ? 'Administer' : 'Read only'),
        session.user_id ? [el('dt', {}, 'Signed in as'), el('dd', {}, session.user_id)] : null,
        el('dt', {}, 'Ends'), el('dd', {}, when(session.expires_at)))));
    const activity = el('section', { class: 'card', 'aria-labelledby': 'ov-activity' },
      el('h2', { id: 'ov-activity' }, 'Activity'));
    if (oldest.status === 'fulfilled') {
      // The tenant's positions are consecutive: the last 200 tell the last minute's rate.
      const head = oldest.value.data.head;
      try {
        const { data } = await api('GET', `/v1/events?after=${Math.max(0, head - 200)}&limit=200`);
        const since = Date.now() - 60000;
        const recent = data.events.filter(e => new Date(e.at).getTime() >= since).length;
        activity.append(el('p', { class: 'figure' }, recent >= 200 ? '200+' : String(recent)),
          el('p', {}, 'membership events in the last minute'));
      } catch (err) { activity.append(problemBox(err)); }
    } else activity.append(problemBox(oldest.reason));
    cards.append(activity);
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
    const waiting = el('section', { class: 'card', 'aria-labelledby': 'ov-requests' },
      el('h2', { id: 'ov-requests' }, 'Join requests waiting'));
    if (requests.status === 'fulfilled') {
      const items = requests.value.data.items;
      const byConv = new Map();
      for (const r of items) byConv.set(r.conversation_id, [r.conversation && r.conversation.name, (byConv.get(r.conversation_id) || [null, 0])[1] + 1]);
      waiting.append(el('p', { class: 'figure' }, items.length >= 50 ? '50+' : String(items.length)),
        byConv.size ? el('ul', {}, [...byConv].map(([id, [name, n]]) =>
          el('li', {}, el('a', { href: `#/conversations/${id}/ways-in` }, name || id), ` (${n})`))) : el('p', { class: 'muted' }, 'None.'));
    } else waiting.append(problemBox(requests.reason));
    cards.append(waiting);
    view.append(cards);
    const recentAudit = el('section', { 'aria-labelledby': 'ov-audit' }, el('h2', { id: 'ov-audit' }, 'Recent audit entries'));
    if (trail.status === 'fulfilled') {
      recentAudit.append(table('The latest changes across conversations, newest first', ['When', 'Action', 'By', 'About', 'Conversation'],
        trail.value.data.items.map(a => [when(a.at), a.action, actorName(a.actor), a.target_user_id || '',
          el('a', { href: `#/conversations/${a.conversation_id}/audit` }, 'trail')]), 'Nothing recorded yet.'));
    } else recentAudit.append(problemBox(trail.reason));
    view.append(recentAudit);
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

  /** The heading of a conversation's views, with the links between them. */
  async function conversationHead(view, id, current) {
    const got = await api('GET', `/v1/conversations/${id}`);
    const c = got.data;
    const tabs = [['', 'About and members'], ['/ways-in', 'Ways in'], ['/media', 'Media'], ['/audit', 'Audit trail'], ['/events', 'Live events']];
    view.append(el('p', { class: 'crumbs' }, el('a', { href: '#/conversations' }, 'Conversations'), ' / '),
      el('h1', {}, c.name || '(no name)'),
      el('nav', { class: 'tabs', 'aria-label': 'This conversation' }, tabs.map(([sub, label]) =>
        el('a', { href: `#/conversations/${id}${sub}`, 'aria-current': sub === current ? 'page' : null }, label))));
    return got;
  }

  async function conversation(view, params, id) {
    const { data: c, etag } = await conversationHead(view, id, '');
    view.append(conversationInfo(c, etag));
    view.append(await memberSection(c, params));
  }

  /** A button that runs `fn`, shows its outcome in `status` and renders the view again. */
  function action(label, status, fn, attrs) {
    return el('button', { type: 'button', ...(attrs || {}), onclick: async () => {
      status.replaceChildren(loading(label.toLowerCase()));
      try { await fn(); await render(); } catch (err) { status.replaceChildren(problemBox(err)); }
    } }, label);
  }

  async function waysIn(view, params, id) {
    const { data: c } = await conversationHead(view, id, '/ways-in');
    const status = el('div', { 'aria-live': 'polite' });
    view.append(status);
    const [requests, links, invitations] = await Promise.all([
      api('GET', `/v1/conversations/${id}/join-requests?status=pending&limit=50`),
      api('GET', `/v1/conversations/${id}/invite-links?limit=50`),
      api('GET', `/v1/conversations/${id}/invitations?status=pending&limit=50`),
    ]);
    view.append(el('h2', {}, 'Join requests waiting'), table('Pending join requests',
      ['User', 'Message', 'Asked', ''], requests.data.items.map(r => [
        el('a', { href: `#/users/${enc(r.user_id)}` }, r.user_id), r.message || '', when(r.created_at),
        canWrite() ? el('span', { class: 'buttons' },
          action('Approve', status, () => api('POST', `/v1/conversations/${id}/join-requests/${r.id}/approve`)),
          action('Decline', status, () => api('POST', `/v1/conversations/${id}/join-requests/${r.id}/decline`), { class: 'secondary' })) : '',
      ]), 'No join requests are waiting.'));
    view.append(el('h2', {}, 'Invite links'), table('Invite links', ['Name', 'Code', 'Role', 'Uses', 'Expires', 'State', ''],
      links.data.items.map(l => [
        l.name || '', el('code', {}, l.code), l.role, `${l.uses}${l.max_uses ? ` of ${l.max_uses}` : ''}`,
        when(l.expires_at), l.revoked_at ? 'revoked' : (l.requires_approval ? 'needs approval' : 'joins at once'),
        l.revoked_at ? '' : el('span', { class: 'buttons' },
          el('button', { type: 'button', class: 'secondary', onclick: async () => {
            try { await navigator.clipboard.writeText(l.code); status.replaceChildren(notice(`Copied ${l.code}.`)); } catch (_) { status.replaceChildren(notice(`Copy it by hand: ${l.code}`)); }
          } }, 'Copy'),
          canWrite() ? action('Revoke', status, () => api('DELETE', `/v1/conversations/${id}/invite-links/${enc(l.code)}`), { class: 'secondary' }) : null),
      ]), 'No invite links.'));
    if (canWrite() && c.type === 'group') {
      const name = el('input', { name: 'link_name', maxlength: 100 });
      const uses = el('input', { name: 'max_uses', type: 'number', min: 1, max: 100000 });
      const approval = el('input', { name: 'requires_approval', type: 'checkbox' });
      view.append(el('form', { class: 'inline', onsubmit: async e => {
        e.preventDefault();
        status.replaceChildren(loading('making the link'));
        try {
          const { data } = await api('POST', `/v1/conversations/${id}/invite-links`, {
            body: { name: name.value || null, max_uses: uses.value ? Number(uses.value) : null, requires_approval: approval.checked },
          });
          await render();
          main.querySelector('[aria-live]').replaceChildren(notice(`Invite link made: ${data.code}`));
        } catch (err) { status.replaceChildren(problemBox(err)); }
      } }, field('Name', name), field('Most uses', uses), el('label', { class: 'check' }, approval, ' Needs approval'),
      el('button', { type: 'submit' }, 'Make an invite link')));
    }
    view.append(el('h2', {}, 'Pending invitations'), table('Pending invitations', ['User', 'Role', 'Invited by', 'Expires', ''],
      invitations.data.items.map(i => [
        el('a', { href: `#/users/${enc(i.user_id)}` }, i.user_id), i.role, i.invited_by || 'server', when(i.expires_at),
        canWrite() ? action('Revoke', status, () => api('DELETE', `/v1/conversations/${id}/invitations/${i.id}`), { class: 'secondary' }) : '',
      ]), 'No invitations are waiting.'));
  }

  async function media(view, params, id) {
    await conversationHead(view, id, '/media');
    const q = new URLSearchParams({ conversation_id: id, limit: '24' });
    if (params.get('cursor')) q.set('cursor', params.get('cursor'));
    const { data } = await api('GET', `/v1/media?${q}`);
    if (!data.items.length) { view.append(el('p', { class: 'empty' }, 'No media in this conversation.')); return; }
    const grid = el('ul', { class: 'media' });
    for (const m of data.items) {
      const item = el('li', {}, el('div', { class: 'thumb' }, m.thumbnail ? loading('preview') : el('span', { class: 'muted' }, m.file_type)),
        el('strong', {}, m.filename), el('small', {}, `${Math.ceil(m.size_bytes / 1024)} KB · `, when(m.uploaded_at), ` · ${m.uploader_id}`));
      grid.append(item);
      if (m.thumbnail) {
        api('POST', `/v1/media/${m.id}/url`, { body: { variant: 'thumbnail' } }).then(({ data: u }) => {
          item.querySelector('.thumb').replaceChildren(el('img', { src: u.url, alt: `Preview of ${m.filename}`, loading: 'lazy' }));
        }, () => item.querySelector('.thumb').replaceChildren(el('span', { class: 'muted' }, 'no preview')));
      }
    }
    view.append(grid, pager(params, data.next_cursor, `#/conversations/${id}/media`));
  }

  /** Who acted: a user, the server (through the dashboard for a named person), the sweeper. */
  function actorName(actor) {
    if (actor.type === 'server' && actor.user_id) return `${actor.user_id} (dashboard)`;
    return actor.user_id || actor.type;
  }

  function auditTable(items, caption) {
    return table(caption, ['When', 'Action', 'By', 'About', 'Reason'], items.map(a => [
      when(a.at), a.action, actorName(a.actor), a.target_user_id || '', a.reason || '',
    ]), 'Nothing recorded.');
  }

  async function audit(view, params, id) {
    await conversationHead(view, id, '/audit');
    const target = el('input', { type: 'search', name: 'target', value: params.get('target') || '', autocomplete: 'off' });
    view.append(el('form', { class: 'filters', role: 'search', onsubmit: e => {
      e.preventDefault();
      go(`#/conversations/${id}/audit`, { target: target.value.trim() });
    } }, field('About user id', target), el('button', { type: 'submit' }, 'Filter')));
    const q = new URLSearchParams({ limit: '50' });
    for (const k of ['target', 'cursor']) if (params.get(k)) q.set(k, params.get(k));
    const { data } = await api('GET', `/v1/conversations/${id}/audit?${q}`);
    view.append(auditTable(data.items, 'Audit trail, newest first'), pager(params, data.next_cursor, `#/conversations/${id}/audit`));
  }

  async function liveEvents(view, params, id) {
    await conversationHead(view, id, '/events');
    // Start at the tenant's head: what happens from now on.
    const { data: head } = await api('GET', `/v1/events?conversation_id=${id}&limit=1&after=0`);
    const state = el('p', { class: 'muted', role: 'status' }, 'Connecting…');
    const rows = el('tbody', {});
    view.append(state, el('div', { class: 'table-wrap' }, el('table', {},
      el('caption', {}, 'Events of this conversation as they happen, newest first'),
      el('thead', {}, el('tr', {}, ['When', 'Event', 'By', 'About'].map(h => el('th', { scope: 'col' }, h)))),
      rows)));
    const stream = new EventSource(`/v1/events/stream?conversation_id=${id}&after=${head.head}`);
    stream.onopen = () => { state.textContent = 'Live: waiting for events.'; };
    stream.onmessage = e => {
      const ev = JSON.parse(e.data);
      state.textContent = 'Live.';
      rows.prepend(el('tr', {}, [when(ev.at), ev.type, actorName(ev.actor), ev.target_user_id || ''].map(c => el('td', {}, c))));
      while (rows.children.length > 200) rows.lastChild.remove();
    };
    stream.addEventListener('error', e => {
      if (e.data) {
        const p = JSON.parse(e.data);
        stream.close();
        state.replaceChildren(problemBox({ problem: { title: 'The stream ended', detail: p.detail, code: p.code } }));
      } else state.textContent = 'Reconnecting…';
    });
    cleanups.push(() => stream.close());
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
    const trail = await api('GET', `/v1/conversations/${id}/audit?target=${enc(user)}&limit=20`);
    const about = el('section', { 'aria-labelledby': 'm-audit' }, el('h2', { id: 'm-audit' }, 'Audit entries about them'),
      auditTable(trail.data.items, 'The latest 20, newest first'),
      el('a', { href: `#/conversations/${id}/audit?target=${enc(user)}` }, 'All of them'));
    if (!canWrite()) {
      view.append(el('p', { class: 'muted' }, 'This session may look only.'), about);
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
    // Permission overrides: each flag at the role's default, or allowed or denied for this
    // member alone (the API allows only flags the caller holds, on members ranked below it).
    const overrides = m.permission_overrides || {};
    const roleDef = roles && roles.roles ? roles.roles.find(r => r.name === m.role) : null;
    const flagNames = Object.keys(m.permissions || {}).filter(k => typeof m.permissions[k] === 'boolean');
    if (flagNames.length) {
      const stateOf = f => (f in overrides ? (overrides[f] ? 'allow' : 'deny') : 'default');
      const controls = flagNames.map(f => {
        const byRole = roleDef && roleDef.permissions ? roleDef.permissions[f] === true : m.permissions[f];
        return [f, select(`perm-${f}`, [['default', `Role default (${byRole ? 'allowed' : 'denied'})`], ['allow', 'Allow'], ['deny', 'Deny']], stateOf(f))];
      });
      actions.append(el('form', { class: 'perms', onsubmit: act('Permission change', () => {
        const permissions = {};
        for (const [f, control] of controls) {
          if (control.value !== stateOf(f)) permissions[f] = control.value === 'default' ? null : control.value === 'allow';
        }
        return api('PATCH', base, { body: { permissions } });
      }) }, el('fieldset', {}, el('legend', {}, 'Permission overrides'), controls.map(([f, control]) => field(f, control))),
      el('button', { type: 'submit' }, 'Save permissions')));
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
    if (m.status === 'active' && roles && roles.roles && m.role !== roles.roles[0].name) {
      actions.append(el('button', { type: 'button', class: 'secondary', onclick: act('Ownership transfer', async () => {
        if (!window.confirm(`Make ${m.display_name || m.user_id} the owner of ${c.name}?`)) throw new Error('Not transferred.');
        await api('POST', `/v1/conversations/${id}/transfer-ownership`, { body: { user_id: m.user_id } });
      }) }, 'Make owner'));
    }
    view.append(actions, about);
  }

  /** A secret shown once, with a button that copies it. */
  function secretBox(what, secret) {
    const out = el('code', { class: 'secret' }, secret);
    return el('div', { class: 'notice', role: 'status' }, `${what} Its signing secret is shown only now: `, out, ' ',
      el('button', { type: 'button', class: 'secondary', onclick: () => navigator.clipboard && navigator.clipboard.writeText(secret) }, 'Copy'));
  }

  async function webhooks(view) {
    view.append(el('h1', {}, 'Webhooks'));
    const { data } = await api('GET', '/v1/webhooks');
    const status = el('div', { 'aria-live': 'polite' });
    if (canWrite()) {
      const url = el('input', { name: 'url', type: 'url', required: true, placeholder: 'https://example.com/roster-events' });
      const description = el('input', { name: 'description', maxlength: 500 });
      view.append(el('form', { class: 'inline', onsubmit: async e => {
        e.preventDefault();
        status.replaceChildren(loading('saving'));
        try {
          const { data: w } = await api('POST', '/v1/webhooks', { body: { url: url.value, description: description.value || null } });
          await render();
          main.querySelector('[aria-live]').replaceChildren(secretBox('Endpoint added.', w.secret));
        } catch (err) { status.replaceChildren(problemBox(err)); }
      } }, field('Endpoint URL', url), field('Description', description), el('button', { type: 'submit' }, 'Add endpoint')));
    }
    view.append(status, table('Webhook endpoints', ['URL', 'State', 'Last success', 'Failing since', ''], data.items.map(w => [
      el('a', { href: `#/webhooks/${w.id}` }, w.url),
      w.enabled ? 'enabled' : `disabled${w.disabled_reason ? `: ${w.disabled_reason}` : ''}`,
      when(w.last_success_at), when(w.failing_since),
      canWrite() ? el('button', { type: 'button', onclick: async () => {
        try { await api('PATCH', `/v1/webhooks/${w.id}`, { body: { enabled: !w.enabled } }); await render(); } catch (err) { status.replaceChildren(problemBox(err)); }
      } }, w.enabled ? 'Disable' : 'Enable') : '',
    ]), 'No webhook endpoints.'));
  }

  async function webhook(view, params, id) {
    const [{ data: w }, { data: deliveries }] = await Promise.all([
      api('GET', `/v1/webhooks/${id}`),
      api('GET', `/v1/webhooks/${id}/deliveries?limit=50${params.get('cursor') ? `&cursor=${enc(params.get('cursor'))}` : ''}`),
    ]);
    view.append(el('p', { class: 'crumbs' }, el('a', { href: '#/webhooks' }, 'Webhooks'), ' / '), el('h1', {}, w.url));
    const status = el('div', { 'aria-live': 'polite' });
    view.append(el('dl', { class: 'facts' },
      el('dt', {}, 'State'), el('dd', {}, w.enabled ? 'enabled' : `disabled${w.disabled_reason ? `: ${w.disabled_reason}` : ''}`),
      el('dt', {}, 'Events'), el('dd', {}, w.event_types.length ? w.event_types.join(', ') : 'every type'),
      el('dt', {}, 'Position'), el('dd', {}, String(w.cursor)),
      el('dt', {}, 'Last success'), el('dd', {}, when(w.last_success_at)),
      el('dt', {}, 'Failing since'), el('dd', {}, when(w.failing_since))), status);
    if (canWrite()) {
      const from = el('input', { name: 'after', type: 'number', min: 0, value: 0 });
      view.append(el('div', { class: 'buttons' },
        el('button', { type: 'button', class: 'secondary', onclick: async () => {
          try {
            const { data: r } = await api('POST', `/v1/webhooks/${id}/rotate-secret`);
            status.replaceChildren(secretBox('Secret rotated.', r.secret));
          } catch (err) { status.replaceChildren(problemBox(err)); }
        } }, 'Rotate secret')),
      el('form', { class: 'inline', onsubmit: async e => {
        e.preventDefault();
        try { await api('POST', `/v1/webhooks/${id}/replay`, { body: { after: Number(from.value) } }); await render(); } catch (err) { status.replaceChildren(problemBox(err)); }
      } }, field('Send again every event after position', from), el('button', { type: 'submit' }, 'Replay')));
    }
    view.append(el('h2', {}, 'Deliveries'), table('Deliveries, newest first', ['When', 'Event', 'Position', 'Outcome', 'Status', 'Latency', 'Attempt', 'Error'],
      deliveries.items.map(d => [when(d.at), d.type, String(d.position), d.outcome, d.status_code === null ? '—' : String(d.status_code),
        `${d.latency_ms} ms`, String(d.attempt), d.error || '']), 'Nothing delivered yet.'),
    pager(params, deliveries.next_cursor, `#/webhooks/${id}`));
  }

  async function roles(view) {
    view.append(el('h1', {}, 'Roles'));
    const { data, etag } = await api('GET', '/v1/roles');
    const flags = r => Object.entries(r.permissions || {}).filter(([, v]) => v === true).map(([k]) => k).join(', ');
    view.append(table('Roles, highest rank first (the first is the owner)', ['Rank', 'Role', 'Most per conversation', 'Permissions'],
      data.roles.map((r, i) => [String(i + 1), r.name + (r.name === data.default_role ? ' (default)' : ''),
        r.limit === null || r.limit === undefined ? 'any number' : String(r.limit), flags(r)]), 'No roles.'));
    if (data.capabilities && data.capabilities.length) view.append(el('p', {}, `Custom capabilities: ${data.capabilities.join(', ')}`));
    if (!canWrite()) return;
    const catalog = { roles: data.roles, default_role: data.default_role, capabilities: data.capabilities || [] };
    const text = el('textarea', { name: 'catalog', rows: 18, spellcheck: 'false', class: 'code' }, JSON.stringify(catalog, null, 2));
    const status = el('div', { 'aria-live': 'polite' });
    view.append(el('details', {}, el('summary', {}, 'Edit the catalog'), el('form', { class: 'edit', onsubmit: async e => {
      e.preventDefault();
      let body;
      try { body = JSON.parse(text.value); } catch (err) { status.replaceChildren(problemBox({ problem: { title: 'Not JSON', detail: err.message } })); return; }
      try {
        const { data: r } = await api('PUT', '/v1/roles', { headers: { 'If-Match': etag }, body });
        await render();
        main.querySelector('h1').after(notice(`Saved; ${r.members_resolved} members re-resolved.`));
      } catch (err) {
        if (err.status === 412) {
          status.replaceChildren(el('div', { class: 'error', role: 'alert' }, 'Someone changed the catalog since you opened it; nothing was saved. ',
            el('button', { type: 'button', onclick: () => render() }, 'Load the current catalog')));
        } else status.replaceChildren(problemBox(err));
      }
    } }, field('Catalog (roles highest first, with limits and permissions; the API checks every rule)', text),
    el('button', { type: 'submit' }, 'Save the catalog'), status)));
  }

  async function users(view) {
    view.append(el('h1', {}, 'Users'));
    const id = el('input', { name: 'user_id', required: true, autocomplete: 'off' });
    view.append(el('form', { class: 'filters', role: 'search', onsubmit: e => {
      e.preventDefault();
      location.hash = `#/users/${enc(id.value.trim())}`;
    } }, field('User id', id), el('button', { type: 'submit' }, 'Open')));
  }

  async function user(view, params, id) {
    const [{ data: u }, { data: convs }] = await Promise.all([
      api('GET', `/v1/users/${enc(id)}`),
      api('GET', `/v1/users/${enc(id)}/conversations?limit=50`),
    ]);
    view.append(el('p', { class: 'crumbs' }, el('a', { href: '#/users' }, 'Users'), ' / '), el('h1', {}, u.display_name),
      el('dl', { class: 'facts' }, el('dt', {}, 'User id'), el('dd', {}, el('code', {}, u.user_id)),
        el('dt', {}, 'Since'), el('dd', {}, when(u.created_at)), el('dt', {}, 'Changed'), el('dd', {}, when(u.updated_at))));
    view.append(el('h2', {}, 'Conversations'), table('Their conversations', ['Name', 'Role', 'Status', 'Joined'], convs.items.map(m => [
      el('a', { href: `#/conversations/${m.conversation.id}/members/${enc(u.user_id)}` }, m.conversation.name || '(no name)'),
      m.role, m.status, when(m.joined_at)]), 'In no conversation.'));
    const status = el('div', { 'aria-live': 'polite' });
    view.append(el('h2', {}, 'Data'), status, el('button', { type: 'button', class: 'secondary', onclick: async () => {
      try {
        const { data } = await api('GET', `/v1/users/${enc(id)}/export`);
        const href = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: 'application/json' }));
        const a = el('a', { href, download: `${id}-export.json` }, 'download');
        status.replaceChildren(notice('Export ready: '), a);
        a.click();
      } catch (err) { status.replaceChildren(problemBox(err)); }
    } }, 'Export their data'));
    if (!canWrite()) return;
    const confirmId = el('input', { name: 'confirm', autocomplete: 'off' });
    const erase = el('button', { type: 'submit', class: 'danger', disabled: true }, 'Erase this user');
    confirmId.addEventListener('input', () => { erase.disabled = confirmId.value !== u.user_id; });
    view.append(el('form', { class: 'edit', onsubmit: async e => {
      e.preventDefault();
      if (confirmId.value !== u.user_id) return;
      try {
        const { data: r } = await api('DELETE', `/v1/users/${enc(id)}`);
        view.replaceChildren(el('h1', {}, 'User erased'), notice(`${r.user_id} erased; ${r.memberships_removed} memberships removed.`));
      } catch (err) { status.replaceChildren(problemBox(err)); }
    } }, field(`Type ${u.user_id} to erase their profile and every membership (this cannot be undone)`, confirmId), erase));
  }

  // ---- the operators' console ------------------------------------------------------------

  async function tenants(view, params) {
    view.append(el('h1', {}, 'Tenants'));
    const status = el('div', { 'aria-live': 'polite' });
    const id = el('input', { name: 'tenant_id', required: true, pattern: '[a-z0-9][a-z0-9-]{0,61}[a-z0-9]', autocomplete: 'off' });
    const name = el('input', { name: 'tenant_name', maxlength: 200 });
    view.append(el('form', { class: 'inline', onsubmit: async e => {
      e.preventDefault();
      status.replaceChildren(loading('creating'));
      try {
        const { data } = await api('POST', '/admin/v1/tenants', { body: { id: id.value, name: name.value || null } });
        await render();
        main.querySelector('[aria-live]').replaceChildren(keyBox(`Tenant ${data.tenant.id} created with key ${data.key.kid}.`, data.key.secret));
      } catch (err) { status.replaceChildren(problemBox(err)); }
    } }, field('Tenant id', id, 'a-z, 0-9 and inner hyphens'), field('Name', name), el('button', { type: 'submit' }, 'Create tenant')), status);
    const q = new URLSearchParams({ limit: '50' });
    if (params.get('cursor')) q.set('cursor', params.get('cursor'));
    const { data } = await api('GET', `/admin/v1/tenants?${q}`);
    view.append(table('Tenants', ['Tenant', 'Name', 'Status', 'Keys in use', 'Created'], data.items.map(t => [
      el('a', { href: `#/tenants/${enc(t.id)}` }, t.id), t.name, t.status,
      String(t.keys.filter(k => !k.revoked_at).length), when(t.created_at),
    ]), 'No tenants.'), pager(params, data.next_cursor, '#/'));
  }

  /** A tenant key's secret, shown once. */
  function keyBox(what, secret) {
    return el('div', { class: 'notice', role: 'status' }, `${what} Its secret is shown only now: `,
      el('code', { class: 'secret' }, secret));
  }

  async function tenant(view, params, id) {
    const { data: t } = await api('GET', `/admin/v1/tenants/${enc(id)}`);
    const status = el('div', { 'aria-live': 'polite' });
    view.append(el('p', { class: 'crumbs' }, el('a', { href: '#/' }, 'Tenants'), ' / '), el('h1', {}, t.name),
      el('dl', { class: 'facts' }, el('dt', {}, 'Id'), el('dd', {}, el('code', {}, t.id)),
        el('dt', {}, 'Status'), el('dd', {}, t.status), el('dt', {}, 'Created'), el('dd', {}, when(t.created_at))), status);
    const suspended = t.status === 'suspended';
    view.append(el('div', { class: 'buttons' },
      el('button', { type: 'button', class: suspended ? null : 'danger', onclick: async () => {
        if (!suspended && !window.confirm(`Suspend ${t.id}? Every token and dashboard session of it stops working.`)) return;
        status.replaceChildren(loading('saving'));
        try { await api('PATCH', `/admin/v1/tenants/${enc(t.id)}`, { body: { status: suspended ? 'active' : 'suspended' } }); await render(); } catch (err) { status.replaceChildren(problemBox(err)); }
      } }, suspended ? 'Make active again' : 'Suspend tenant'),
      el('button', { type: 'button', class: 'secondary', onclick: async () => {
        try {
          const { data } = await api('POST', `/admin/v1/tenants/${enc(t.id)}/keys`);
          await render();
          main.querySelector('[aria-live]').replaceChildren(keyBox(`Key ${data.key.kid} added.`, data.key.secret));
        } catch (err) { status.replaceChildren(problemBox(err)); }
      } }, 'Add a key')));
    view.append(el('h2', {}, 'Signing keys'), table('Signing keys, oldest first', ['Key id', 'Added', 'Revoked', ''], t.keys.map(k => [
      el('code', {}, k.kid), when(k.created_at), k.revoked_at ? when(k.revoked_at) : 'in use',
      k.revoked_at ? '' : action('Revoke', status, async () => {
        if (!window.confirm(`Revoke ${k.kid}? Tokens it signed stop working at once.`)) throw new Error('Not revoked.');
        await api('DELETE', `/admin/v1/tenants/${enc(t.id)}/keys/${enc(k.kid)}`);
      }, { class: 'secondary' }),
    ]), 'No keys.'));
  }

  async function platformAudit(view, params) {
    view.append(el('h1', {}, 'Platform audit'));
    const q = new URLSearchParams({ limit: '50' });
    if (params.get('cursor')) q.set('cursor', params.get('cursor'));
    const { data } = await api('GET', `/admin/v1/audit?${q}`);
    view.append(table('Every call of the platform API, newest first', ['When', 'Call', 'Tenant', 'Status', 'Latency', 'By'], data.items.map(c => [
      when(c.at), `${c.method} ${c.route}`, c.tenant_id || '', String(c.status), `${c.latency_ms} ms`, el('code', {}, c.token_id || '—'),
    ]), 'No calls recorded.'), pager(params, data.next_cursor, '#/audit'));
  }

  // ---- signing in and out ----------------------------------------------------------------

  function signedOut(err) {
    session = null;
    document.getElementById('nav').hidden = true;
    document.getElementById('signout').hidden = true;
    document.getElementById('who').textContent = '';
    main.replaceChildren(el('h1', {}, 'Signed out'),
      err ? problemBox(err) : null,
      el('p', {}, platform
        ? 'Run `roster admin-link` on a machine with the service’s configuration and open the link it prints.'
        : 'Ask your service for a new dashboard link (POST /v1/dashboard/links with a server token) and open it here.'));
  }

  async function signIn() {
    const m = location.hash.match(/code=([A-Za-z0-9_-]+)/);
    try {
      if (m) {
        // The code works once: take it out of the address bar (and history) at once.
        history.replaceState(null, '', `${location.pathname}#/`);
        session = (await api('POST', sessionPath, { body: { code: m[1] } })).data;
      } else {
        session = (await api('GET', sessionPath)).data;
      }
    } catch (err) {
      signedOut(err);
      return;
    }
    document.getElementById('nav').hidden = false;
    document.getElementById('signout').hidden = false;
    document.getElementById('who').textContent = platform ? 'Operators’ console' :
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
