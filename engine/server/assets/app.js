// The Corral dashboard: a plain client of the /v1 API (README, "Hosting"), signed in with a tenant
// token. No framework, no build step, nothing loaded from elsewhere. Server and user text reaches
// the page only as text nodes (h() children, textContent), never as HTML: the page shows
// untrusted workflow output.

const SVG_NS = 'http://www.w3.org/2000/svg';
const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'stopped', 'paused', 'interrupted'];
const isFinal = (status) => status !== 'queued' && status !== 'running';
const TOKEN_KEY = 'corral.token', FORM_KEY = 'corral.new-run', FILTER_KEY = 'corral.runs-filter';

// ---- DOM helpers ----------------------------------------------------------------------------

const $ = (css, root = document) => root.querySelector(css);

/** An element. Attributes with null/false values are skipped, `on*` functions become listeners;
 *  children are nodes or strings (as text), nested arrays are flattened, null/false skipped. */
const h = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
const s = (tag, attrs, ...children) => build(document.createElementNS(SVG_NS, tag), attrs, children);

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'value' && el.namespaceURI !== SVG_NS) el.value = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child != null && child !== false) el.append(child instanceof Node ? child : String(child));
  }
  return el;
}
const fill = (el, ...children) => { el.replaceChildren(); return build(el, null, children); };

/** Puts `nodes` into `parent` in order, moving only what moved, so that a row which stays keeps
 *  its focus across live refetches. */
function reconcile(parent, nodes) {
  const keep = new Set(nodes);
  for (const child of [...parent.children]) if (!keep.has(child)) child.remove();
  nodes.forEach((node, i) => {
    if (parent.children[i] !== node) parent.insertBefore(node, parent.children[i] || null);
  });
}

/** Elements for `items`, reusing the element made last time for an item whose JSON is the same. */
function keyed(cache, items, keyOf, make) {
  const next = new Map(items.map((item) => {
    const key = keyOf(item), sig = JSON.stringify(item), old = cache.get(key);
    return [key, old && old.sig === sig ? old : { sig, el: make(item) }];
  }));
  cache.clear();
  for (const [key, entry] of next) cache.set(key, entry);
  return [...next.values()].map((entry) => entry.el);
}

const cls = (name) => String(name ?? '').replace(/[^a-z0-9_-]/gi, '');
const badge = (status, attrs = {}) =>
  h('span', { ...attrs, class: `badge badge-${cls(status)}`, 'data-status': status }, status ?? '—');
const tableWrap = (table) => h('div', { class: 'table-wrap' }, table);
const section = (title, ...body) => h('section', { class: 'panel' }, h('h2', {}, title), ...body);
const crumbs = (...parts) => h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' },
  h('a', { href: '#/runs' }, 'Runs'), parts.map((part) => [' / ', part]));
const pageHead = (...children) => h('div', { class: 'page-head' }, ...children);
const empty = (cols, text) => h('tr', {}, h('td', { colspan: cols, class: 'empty' }, text));

/** A <thead> from labels; a label `'#Tokens'` is a right-aligned (numeric) column. */
const headRow = (labels) => h('thead', {}, h('tr', {}, labels.map((label) => label.startsWith('#') && label.length > 1
  ? h('th', { scope: 'col', class: 'num' }, label.slice(1)) : h('th', { scope: 'col' }, label))));

/** A definition list from [term, value] pairs; pairs with no value are left out. */
const facts = (pairs) => h('dl', { class: 'facts' }, pairs.filter(([, v]) => v != null && v !== '' && v !== false)
  .map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))));

/** A <pre>; a long one is clipped with a "Show all" toggle (all the text is there). */
function longText(text, attrs = {}) {
  const pre = h('pre', attrs, text);
  if (text.length < 1500 && text.split('\n').length < 25) return pre;
  pre.classList.add('clamped');
  const toggle = h('button', { type: 'button', class: 'link', 'aria-expanded': 'false' }, 'Show all');
  toggle.addEventListener('click', () => {
    const open = !pre.classList.toggle('clamped');
    toggle.setAttribute('aria-expanded', String(open));
    toggle.textContent = open ? 'Show less' : 'Show all';
  });
  return h('div', { class: 'long' }, pre, toggle);
}

const pretty = (value) => (typeof value === 'string' ? value : JSON.stringify(value, null, 2) ?? 'null');

// ---- Formatting: text gets thousands separators, data-* attributes the raw numbers ----------

const numberFormat = new Intl.NumberFormat('en-US');
const num = (n) => (n == null ? '—' : numberFormat.format(n));
const money = (c) => (c == null ? '—' : `$${Number(c).toFixed(4)}`);
const tokenTotal = (t) => t?.total ?? 0;
const tokenParts = (t) => `input ${num(t?.input)} · output ${num(t?.output)} · ` +
  `cache read ${num(t?.cache_read)} · cache write ${num(t?.cache_write)}`;

function duration(ms) {
  if (ms == null) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const sec = ms / 1000, min = Math.floor(sec / 60);
  if (sec < 60) return `${sec.toFixed(1)} s`;
  return min < 60 ? `${min}m ${Math.floor(sec % 60)}s` : `${Math.floor(min / 60)}h ${min % 60}m`;
}

function when(iso, timeOnly = false) {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return timeOnly ? date.toLocaleTimeString() : date.toLocaleString();
}

// ---- The API --------------------------------------------------------------------------------

let token = sessionStorage.getItem(TOKEN_KEY) || '';

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `the server answered ${status}`);
    this.status = status;
    this.body = body || {};
    this.code = this.body.code || `http_${status}`;
  }
}

/** A JSON request with the token. A 401 signs out (with the server's message) and throws. */
async function api(path, { method = 'GET', body, signal } = {}) {
  const headers = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method, headers, signal, cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (response.status === 401) signOut(data);
  if (!response.ok) {
    throw new ApiError(response.status, data?.message ? data : { message: text.trim() || response.statusText });
  }
  return data;
}

/** Whether an error only means that the page went away (navigated off, or signed out). */
const gone = (error, ctx) => ctx.signal.aborted || error?.name === 'AbortError' || error?.status === 401;

/** Shows an error (`{message, hint}`, a quota's use) in `box`; `null` empties and hides it. */
function showError(box, error) {
  box.hidden = !error;
  if (!error) return box.replaceChildren();
  const body = error.body || error;
  fill(box, h('p', { class: 'message' }, body.message || error.message || String(error)),
    body.quota ? h('p', { class: 'quota' }, `quota ${body.quota}: ${num(body.used)} used of ${num(body.limit)}`) : null,
    body.hint ? h('p', { class: 'hint' }, body.hint) : null);
}
const errorBox = (id) => h('div', { id, class: 'error', role: 'alert', hidden: true });

/** Runs `fn` for page `ctx`: a failure shows in `box`, unless the page is gone. */
async function guard(ctx, box, fn) {
  try {
    await fn();
    if (!ctx.signal.aborted) showError(box, null);
  } catch (e) {
    if (!gone(e, ctx)) showError(box, e);
  }
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
});

/**
 * Server-Sent Events over fetch (EventSource cannot send the token). Calls `onOpen` on each
 * connection and `onEvent({id, data})` per event; reconnects 1 s after the stream ends or fails,
 * sending Last-Event-ID, until `signal` aborts or `done()` says nothing more will come.
 */
function subscribe(url, { signal, onEvent, onOpen, done = () => false }) {
  let lastId = null;
  (async () => {
    while (!signal.aborted && !done()) {
      try {
        const headers = { Authorization: `Bearer ${token}`, Accept: 'text/event-stream' };
        if (lastId != null) headers['Last-Event-ID'] = lastId;
        const response = await fetch(url, { headers, signal, cache: 'no-store' });
        if (response.status === 401) return signOut(await response.json().catch(() => null));
        // Nothing to follow (an unknown run, a server without this stream): do not retry.
        if (response.status === 403 || response.status === 404) return;
        if (response.ok && response.body) {
          onOpen?.();
          await readEvents(response.body, (event) => {
            if (event.id != null) lastId = event.id;
            if (event.data != null) onEvent(event);
          });
        }
      } catch {
        if (signal.aborted) return;
      }
      if (!done()) await sleep(1000, signal);
    }
  })();
}

async function readEvents(body, emit) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    // (A CR LF pair split across two chunks would read as two line ends; axum sends bare LF.)
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
    for (let end; (end = buffer.indexOf('\n\n')) >= 0; buffer = buffer.slice(end + 2)) {
      emit(parseEvent(buffer.slice(0, end)));
    }
  }
}

function parseEvent(block) {
  let id = null;
  const data = [];
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue; // a comment: the keep-alive
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'id') id = value;
    else if (field === 'data') data.push(value);
  }
  return { id, data: data.length ? data.join('\n') : null };
}

/**
 * `fn` for events to call: at most one run in flight and one start per `gap` ms; calls while it
 * runs or waits fold into one trailing run. Nothing runs once `signal` aborts.
 */
function throttle(fn, signal, gap = 300) {
  let busy = false, again = false, timer = null, last = 0;
  const run = async () => {
    timer = null;
    if (signal.aborted) return;
    busy = true; again = false; last = Date.now();
    try { await fn(); } finally { busy = false; }
    if (again) kick();
  };
  const kick = () => {
    if (signal.aborted) return;
    if (busy) again = true;
    else if (!timer) timer = setTimeout(run, Math.max(0, last + gap - Date.now()));
  };
  signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
  return kick;
}

/** Refetches with `refetch` now and on every change to the tenant's runs (/v1/events tells only
 *  what changes after it connects, so each (re)connection refetches too). */
function liveTenant(ctx, refetch) {
  subscribe('/v1/events', { signal: ctx.signal, onOpen: refetch, onEvent: refetch });
  refetch();
}

// ---- Session and routing --------------------------------------------------------------------

let view = null; // the page shown: {ctrl, signal, el}; aborting ctrl ends its requests and streams

function signOut(body) {
  token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  view?.ctrl.abort();
  view = null;
  $('#view').replaceChildren();
  $('#nav').hidden = $('#session').hidden = true;
  $('#tenant').textContent = '';
  $('#signin').hidden = false;
  showError($('#signin-error'), body?.message ? body : null);
  $('#token').focus();
}

function signedIn(tenant) {
  $('#tenant').textContent = tenant ?? '';
  $('#signin').hidden = true;
  $('#nav').hidden = $('#session').hidden = false;
  showError($('#signin-error'), null);
  route();
}

async function signIn(event) {
  event.preventDefault();
  token = $('#token').value.trim();
  if (!token) return showError($('#signin-error'), { message: 'Enter an API token.' });
  $('#sign-in').disabled = true;
  await checkToken();
  $('#sign-in').disabled = false;
}

/** Checks `token` with GET /v1/usage: in, or back at the sign-in form saying why not (a 401 has
 *  already signed out with the server's message). */
async function checkToken() {
  try {
    const data = await api('/v1/usage');
    sessionStorage.setItem(TOKEN_KEY, token);
    $('#token').value = '';
    signedIn(data.tenant);
  } catch (error) {
    if (error.status !== 401) {
      signOut(null);
      showError($('#signin-error'), { message: `cannot sign in: ${error.message}` });
    }
  }
}

/** A fresh page in #view, leaving the one before (its requests and streams are aborted). */
function enter(title) {
  view?.ctrl.abort();
  const ctrl = new AbortController();
  document.title = `${title} · Corral`;
  view = { ctrl, signal: ctrl.signal, el: fill($('#view')) };
  return view;
}

const decode = (part) => { try { return decodeURIComponent(part); } catch { return part; } };
const ROUTES = [
  [/^#\/runs\/([^/]+)\/agents\/(\d+)$/, (m) => agentPage(decode(m[1]), m[2]), 'nav-runs'],
  [/^#\/runs\/([^/]+)$/, (m) => runPage(decode(m[1])), 'nav-runs'],
  [/^#\/new$/, newPage, 'nav-new'],
  [/^#\/usage$/, usagePage, 'nav-usage'],
  [/^/, runsPage, 'nav-runs'],
];

function route() {
  if (!token) return;
  const [pattern, page, nav] = ROUTES.find(([re]) => re.test(location.hash));
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.id === nav) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  page(location.hash.match(pattern));
}

const runLink = (id) => `#/runs/${encodeURIComponent(id)}`;

// ---- #/runs ---------------------------------------------------------------------------------

function runsPage() {
  const ctx = enter('Runs');
  const filter = h('select', { id: 'status-filter', name: 'status' },
    h('option', { value: '' }, 'all'), STATUSES.map((st) => h('option', { value: st }, st)));
  filter.value = sessionStorage.getItem(FILTER_KEY) || '';
  const tbody = h('tbody'), note = h('p', { class: 'muted' }), error = errorBox('runs-error');
  const cache = new Map();
  fill(ctx.el,
    pageHead(h('h1', {}, 'Runs'), h('div', { class: 'toolbar' },
      h('label', { for: 'status-filter' }, 'Status'), filter, h('a', { class: 'button', href: '#/new' }, 'New run'))),
    error,
    tableWrap(h('table', { id: 'runs-table' }, h('caption', { class: 'sr-only' }, 'Runs, newest first (live)'),
      headRow(['Run', 'Status', 'Workflow', '#Agents', '#Tokens', '#Cost', 'Started', '#Duration']), tbody)),
    note);
  const refetch = throttle(() => guard(ctx, error, async () => {
    const status = filter.value ? `&status=${encodeURIComponent(filter.value)}` : '';
    const data = await api(`/v1/runs?limit=100${status}`, { signal: ctx.signal });
    if (ctx.signal.aborted) return;
    const rows = keyed(cache, data.runs || [], (run) => run.id, runRow);
    reconcile(tbody, rows.length ? rows
      : [empty(8, filter.value ? `No ${filter.value} runs.` : 'No runs yet: start one from New run.')]);
    note.textContent = data.next ? `The newest ${num(rows.length)} runs.` : '';
  }), ctx.signal);
  filter.addEventListener('change', () => { sessionStorage.setItem(FILTER_KEY, filter.value); refetch(); });
  liveTenant(ctx, refetch);
}

/** A run's agents by outcome ({ok, failed, refused}); a bare number is just the count. */
function agentCounts(agents) {
  if (agents == null || typeof agents !== 'object') return num(agents);
  return [h('span', { class: 'ok' }, `${num(agents.ok ?? 0)} ok`), ' · ',
    h('span', { class: agents.failed ? 'bad' : '' }, `${num(agents.failed ?? 0)} failed`), ' · ',
    h('span', { class: agents.refused ? 'warn' : '' }, `${num(agents.refused ?? 0)} refused`)];
}

const runRow = (run) => h('tr', { 'data-run-id': run.id, 'data-status': run.status, class: run.status === 'failed' ? 'row-failed' : null },
  h('td', { 'data-col': 'id' }, h('a', { href: runLink(run.id), class: 'mono' }, run.id)),
  h('td', { 'data-col': 'status' }, badge(run.status)),
  h('td', { 'data-col': 'workflow' }, run.workflow),
  h('td', { 'data-col': 'agents', class: 'num' }, agentCounts(run.outcomes ?? run.agents)),
  h('td', { 'data-col': 'tokens', class: 'num', 'data-value': run.tokens?.total, title: tokenParts(run.tokens) }, num(run.tokens?.total)),
  h('td', { 'data-col': 'cost', class: 'num', 'data-value': run.cost }, money(run.cost)),
  h('td', { 'data-col': 'started' }, h('time', { datetime: run.started }, when(run.started))),
  h('td', { 'data-col': 'duration', class: 'num', 'data-value': run.duration_ms },
    run.duration_ms == null && !isFinal(run.status) ? 'going' : duration(run.duration_ms)));

// ---- #/runs/ID ------------------------------------------------------------------------------

/** An agent call's state: the API's status (queued, ok, failed) with queued split in two. */
const agentState = (a) => (a.status === 'queued' && a.started_ms != null ? 'running' : a.status);

const AGENT_COLUMNS = [ // [sort key, header, sort value, numeric]
  ['n', '#', (a) => a.n, true], ['label', 'Label', (a) => a.label ?? ''], ['phase', 'Phase', (a) => a.phase ?? ''],
  ['model', 'Model', (a) => a.model ?? ''], ['status', 'Status', agentState], ['error_kind', 'Error', (a) => a.error_kind ?? ''],
  ['tokens', 'Tokens', (a) => tokenTotal(a.tokens), true], ['cost', 'Cost', (a) => a.cost ?? 0, true],
  ['duration', 'Duration', (a) => a.duration_ms ?? -1, true],
];

function runPage(id) {
  const ctx = enter(`Run ${id}`);
  const base = `/v1/runs/${encodeURIComponent(id)}`;
  const status = h('span', { id: 'run-status', class: 'badge' }, '…');
  const stop = h('button', { id: 'stop-run', type: 'button', class: 'danger', disabled: true }, 'Stop');
  const resume = h('button', { id: 'resume-run', type: 'button', disabled: true }, 'Resume');
  const actionError = errorBox('run-action-error'), loadError = errorBox('run-load-error');
  const runError = h('div', { id: 'run-error', class: 'error', hidden: true });
  const summary = h('div', { id: 'run-summary' }), phases = h('div', { id: 'phases', class: 'phases' });
  const timeline = h('figure', { id: 'timeline', class: 'chart' }), spend = h('figure', { id: 'spend', class: 'chart' });
  const log = h('ol', { id: 'log', class: 'log' }), logEmpty = h('p', { class: 'muted' }, 'Nothing logged yet.');
  const agentsBody = h('tbody'), script = h('pre', { id: 'script', class: 'code' }), scriptTitle = h('summary', {}, 'Script');
  const body = h('div', { hidden: true });
  const sort = { key: 'n', dir: 1 }, rowCache = new Map(), phaseCache = new Map();
  let run = null, agents = [], finished = false, stopping = false, streaming = false, logCount = 0;

  const heads = AGENT_COLUMNS.map(([key, label, , numeric]) => h('th', { scope: 'col', class: numeric ? 'num' : null, 'data-key': key },
    h('button', { type: 'button', class: 'sort', 'data-sort': key, onclick: () => {
      sort.dir = sort.key === key ? -sort.dir : 1;
      sort.key = key;
      renderAgents();
    } }, label, h('span', { class: 'arrow', 'aria-hidden': 'true' }))));
  fill(ctx.el,
    crumbs(h('span', { class: 'mono' }, id)),
    pageHead(h('h1', {}, 'Run ', h('span', { class: 'mono' }, id)), status, h('div', { class: 'toolbar' }, stop, resume)),
    actionError, runError, loadError, body);
  fill(body, summary,
    section('Phases', phases),
    section('Timeline', h('p', { class: 'help' }, 'Agent calls by slot, each from when it got a slot to when it finished.'), timeline),
    section('Tokens spent', h('p', { class: 'help' }, 'Cumulative tokens of finished calls (replayed answers excluded).'), spend),
    section('Log', logEmpty, log),
    section('Agents', h('div', { class: 'table-wrap tall' }, h('table', { id: 'agents-table' },
      h('caption', { class: 'sr-only' }, 'Agent calls; the column headers sort'), h('thead', {}, h('tr', {}, heads)), agentsBody))),
    h('section', { class: 'panel' }, h('details', { open: true }, scriptTitle, script)));

  const act = async (button, path, after) => {
    button.disabled = true;
    showError(actionError, null);
    try {
      after(await api(path, { method: 'POST', signal: ctx.signal }));
    } catch (e) {
      if (!gone(e, ctx)) { showError(actionError, e); renderButtons(); }
    }
  };
  stop.addEventListener('click', () => act(stop, `${base}/stop`, () => { stopping = true; refetch(); }));
  resume.addEventListener('click', () => act(resume, `${base}/resume`, (data) => { location.hash = runLink(data.id); }));

  function renderButtons() {
    const st = run?.status;
    stop.disabled = !st || isFinal(st) || stopping;
    stop.textContent = stopping && !isFinal(st) ? 'Stopping…' : 'Stop';
    resume.disabled = !st || !isFinal(st) || st === 'succeeded';
  }

  function renderAgents() {
    const value = AGENT_COLUMNS.find(([key]) => key === sort.key)[2];
    const sorted = [...agents].sort((a, b) => {
      const x = value(a), y = value(b);
      const order = typeof x === 'number' && typeof y === 'number'
        ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true });
      return order * sort.dir || a.n - b.n;
    });
    for (const th of heads) {
      const on = th.dataset.key === sort.key;
      if (on) th.setAttribute('aria-sort', sort.dir > 0 ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
      th.querySelector('.arrow').textContent = on ? (sort.dir > 0 ? ' ▲' : ' ▼') : '';
    }
    const rows = keyed(rowCache, sorted, (a) => a.n, (a) => agentRow(id, a));
    reconcile(agentsBody, rows.length ? rows : [empty(AGENT_COLUMNS.length, 'No agent calls yet.')]);
  }

  function render() {
    body.hidden = false;
    status.textContent = run.status;
    status.className = `badge badge-${cls(run.status)}`;
    status.dataset.status = run.status;
    renderButtons();
    runError.hidden = !run.error;
    runError.textContent = run.error ? `Error: ${run.error}` : '';
    fill(summary, runFacts(run));
    if (run.phases?.length) reconcile(phases, keyed(phaseCache, run.phases, (p) => p.name, phaseEl));
    else fill(phases, h('p', { class: 'muted' }, 'No phases yet.'));
    const span = timeSpan(agents, run);
    fill(timeline, gantt(agents, span));
    fill(spend, spendChart(agents, span));
    const entries = run.log || []; // the log only grows: append what is new
    if (entries.length < logCount) { log.replaceChildren(); logCount = 0; }
    log.append(...entries.slice(logCount).map(logLine));
    logCount = entries.length;
    logEmpty.hidden = logCount > 0;
    const source = typeof run.script === 'string' ? run.script : '';
    if (script.textContent !== source) script.textContent = source;
    scriptTitle.textContent = source ? `Script: ${run.workflow} (${num(source.split('\n').length)} lines)`
      : 'Script (none stored: a component workflow)';
    renderAgents();
  }

  const refetch = throttle(() => guard(ctx, loadError, async () => {
    const [detail, list] = await Promise.all([api(base, { signal: ctx.signal }), api(`${base}/agents`, { signal: ctx.signal })]);
    if (ctx.signal.aborted) return;
    run = detail;
    agents = list.agents || [];
    if (isFinal(run.status)) finished = true;
    stopping &&= !finished;
    render();
    if (!streaming && !finished) follow();
  }), ctx.signal);

  // While the run goes, each of its events asks for a (throttled) refetch; run_finished makes
  // this stream the last one (the throttle still runs one refetch after it).
  const follow = () => {
    streaming = true;
    subscribe(`${base}/events`, {
      signal: ctx.signal,
      done: () => finished,
      onEvent: (event) => {
        try { if (JSON.parse(event.data).event === 'run_finished') finished = true; } catch { /* not JSON */ }
        refetch();
      },
    });
  };
  refetch();
}

function runFacts(run) {
  const c = run.counts || {};
  const json = (value) => (value == null ? null : h('pre', { class: 'inline-json' }, pretty(value)));
  return facts([
    ['Workflow', run.workflow],
    ['Hash', run.workflow_hash && h('span', { class: 'mono', title: run.workflow_hash }, run.workflow_hash.slice(0, 16))],
    ['Provider', run.provider], ['Root', run.root],
    ['Resumes', run.resumed_from && h('a', { href: runLink(run.resumed_from), class: 'mono' }, run.resumed_from)],
    ['Started', when(run.started)], ['Finished', run.finished && when(run.finished)],
    ['Duration', run.duration_ms != null ? duration(run.duration_ms) : null],
    ['Agents', `${num(c.agents)} (${num(c.done)} done · ${num(c.running)} running · ${num(c.queued)} queued · ${num(c.failed)} failed)`],
    ['Tokens', h('span', { 'data-value': tokenTotal(run.tokens), title: tokenParts(run.tokens) }, num(tokenTotal(run.tokens)))],
    ['Cost', h('span', { 'data-value': run.cost }, money(run.cost))],
    ['Args', json(run.args)],
    ['Limits', run.limits != null && h('details', {}, h('summary', {}, 'limits'), json(run.limits))],
  ]);
}

function phaseEl(p) {
  const total = p.done + p.running + p.queued + p.failed;
  const segment = (kind, n) => {
    const el = h('span', { class: `seg st-${kind}`, title: `${num(n)} ${kind === 'ok' ? 'done' : kind}` });
    el.style.width = `${total ? (n / total) * 100 : 0}%`;
    return el;
  };
  return h('div', {
    class: `phase${p.failed ? ' has-failed' : ''}`, 'data-phase': p.name ?? '',
    'data-done': p.done, 'data-running': p.running, 'data-queued': p.queued, 'data-failed': p.failed,
  },
  h('div', { class: 'phase-head' }, h('h3', {}, p.name || '(no phase)'),
    h('span', { class: 'phase-counts' }, `${num(p.done)} done · ${num(p.running)} running · ${num(p.queued)} queued · `,
      h('span', { class: p.failed ? 'bad' : '' }, `${num(p.failed)} failed`), ` of ${num(total)}`)),
  h('div', { class: 'stack', role: 'img', 'aria-label': `${p.done} done, ${p.running} running, ${p.queued} queued, ${p.failed} failed` },
    segment('ok', p.done), segment('running', p.running), segment('queued', p.queued), segment('failed', p.failed)),
  h('p', { class: 'phase-tokens' }, `${tokenParts(p.tokens)} · ${money(p.cost)}`));
}

const logLine = (entry) => h('li', { class: entry.kind === 'phase' ? 'log-phase' : 'log-line', 'data-kind': entry.kind },
  h('time', { datetime: entry.at }, when(entry.at, true)), ' ',
  entry.kind === 'phase' ? h('strong', {}, `Phase: ${entry.text}`) : h('span', {}, entry.text));

function agentRow(runId, a) {
  const state = agentState(a);
  const error = a.error && (a.error.length > 160 ? `${a.error.slice(0, 160)}…` : a.error);
  return h('tr', { 'data-agent': a.n, 'data-status': a.status, 'data-state': state, class: a.status === 'failed' ? 'row-failed' : null },
    h('td', { class: 'num' }, a.n),
    h('td', {}, h('a', { href: `${runLink(runId)}/agents/${a.n}` }, a.label || `agent #${a.n}`),
      a.replayed && h('span', { class: 'tag' }, 'replayed')),
    h('td', {}, a.phase || ''),
    h('td', { class: 'mono' }, a.model || ''),
    h('td', {}, badge(state)),
    h('td', {}, a.error_kind && h('strong', { class: 'bad' }, a.error_kind), error && h('div', { class: 'small muted', title: a.error }, error)),
    h('td', { class: 'num', 'data-value': tokenTotal(a.tokens), title: tokenParts(a.tokens) }, num(tokenTotal(a.tokens))),
    h('td', { class: 'num', 'data-value': a.cost }, money(a.cost)),
    h('td', { class: 'num', 'data-value': a.duration_ms }, duration(a.duration_ms)));
}

// Charts: inline SVG stretched to the width (preserveAspectRatio none); their labels are HTML.

const CHART_W = 1000;

/** The time axis of both charts: from the first start to the last finish (now, while it runs). */
function timeSpan(agents, run) {
  let t0 = Infinity, t1 = -Infinity;
  for (const a of agents) {
    if (a.started_ms != null) t0 = Math.min(t0, a.started_ms);
    if (a.finished_ms != null) t1 = Math.max(t1, a.finished_ms);
  }
  if (t0 === Infinity) return null;
  const runEnd = run.finished ? Date.parse(run.finished) : NaN;
  const end = !isFinal(run.status) ? Date.now() : Number.isNaN(runEnd) ? t1 : Math.max(t1, runEnd);
  t1 = Math.max(t1, end, t0 + 1);
  return { t0, t1 };
}

const xOf = (span, t) => ((t - span.t0) / (span.t1 - span.t0)) * CHART_W;

/** Ticks every 1, 2 or 5 × 10^k ms, about six across: grid lines (SVG) and their labels (HTML). */
function axis(span, height) {
  const width = span.t1 - span.t0, raw = width / 6, power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((v) => v >= raw);
  const lines = [], labels = h('div', { class: 'axis', 'aria-hidden': 'true' });
  for (let t = 0; t <= width; t += step) {
    lines.push(s('line', { x1: (t / width) * CHART_W, x2: (t / width) * CHART_W, y1: 0, y2: height, class: 'grid' }));
    if (t / width > 0.92) continue; // a label there would run off the right edge
    labels.append(h('span', {}, t === 0 ? '0' : duration(t)));
    labels.lastChild.style.left = `${(t / width) * 100}%`;
  }
  return { lines, labels };
}

const chartSvg = (height, label, ...children) => s('svg', {
  viewBox: `0 0 ${CHART_W} ${height}`, preserveAspectRatio: 'none', width: '100%', height, role: 'img', 'aria-label': label,
}, ...children);

/** Each started call in the lowest-numbered lane free at its start (free once the lane's last
 *  call finished): the lanes show how many ran at once, a fan-out fills and drains. */
function gantt(agents, span) {
  const started = agents.filter((a) => a.started_ms != null).sort((a, b) => a.started_ms - b.started_ms || a.n - b.n);
  if (!span || !started.length) return h('p', { class: 'muted' }, 'No agent call has started yet.');
  const laneEnds = [];
  const placed = started.map((a) => {
    let lane = laneEnds.findIndex((end) => end <= a.started_ms);
    if (lane < 0) lane = laneEnds.push(0) - 1;
    laneEnds[lane] = a.finished_ms ?? Infinity;
    return { a, lane };
  });
  const lanes = laneEnds.length, laneH = lanes <= 24 ? 12 : Math.max(3, Math.floor(320 / lanes)), height = lanes * laneH;
  const { lines, labels } = axis(span, height);
  const stripes = [];
  for (let i = 1; i < lanes; i += 2) stripes.push(s('rect', { class: 'lane', x: 0, y: i * laneH, width: CHART_W, height: laneH }));
  const bars = placed.map(({ a, lane }) => {
    const state = a.replayed && a.status === 'ok' ? 'replayed' : agentState(a);
    const x = xOf(span, a.started_ms), end = a.finished_ms ?? span.t1;
    return s('rect', {
      class: `bar st-${cls(state)}`, x, y: lane * laneH + 1, width: Math.max(1, xOf(span, end) - x), height: Math.max(1, laneH - 2),
      'data-agent': a.n, 'data-lane': lane,
    }, s('title', {}, `${a.label || 'agent'} #${a.n} · ${state} · ${duration(end - a.started_ms)}${a.error_kind ? ` · ${a.error_kind}` : ''}`));
  });
  return [
    chartSvg(height, `${started.length} agent calls in ${lanes} lanes over ${duration(span.t1 - span.t0)}`, stripes, lines, bars),
    labels,
    h('figcaption', {}, `${num(started.length)} calls, at most ${num(lanes)} at once. `, h('span', { class: 'legend' },
      ['ok', 'running', 'failed', 'replayed'].map((kind) => h('span', {}, h('span', { class: `swatch st-${kind}` }), kind)))),
  ];
}

/** Cumulative tokens (tokens.total) of the finished, not replayed calls, as a step line. */
function spendChart(agents, span) {
  const done = agents.filter((a) => a.finished_ms != null && !a.replayed).sort((a, b) => a.finished_ms - b.finished_ms);
  const total = done.reduce((sum, a) => sum + tokenTotal(a.tokens), 0);
  if (!span || !total) return h('p', { class: 'muted' }, 'No tokens spent yet.');
  const height = 140, y = (v) => (height - 2 - (v / total) * (height - 6)).toFixed(1);
  let cum = 0, d = `M0 ${y(0)}`;
  for (const a of done) {
    cum += tokenTotal(a.tokens);
    d += ` H${xOf(span, Math.max(a.finished_ms, span.t0)).toFixed(1)} V${y(cum)}`;
  }
  d += ` H${CHART_W}`;
  const { lines, labels } = axis(span, height);
  return [
    h('div', { class: 'chart-max' }, `${num(total)} tokens`),
    chartSvg(height, `${total} tokens spent by ${done.length} calls`, lines,
      s('path', { class: 'area', d: `${d} V${height} H0 Z` }), s('path', { class: 'line', d, 'vector-effect': 'non-scaling-stroke' })),
    labels,
  ];
}

// ---- #/runs/ID/agents/N ---------------------------------------------------------------------

async function agentPage(runId, n) {
  const ctx = enter(`Agent #${n} · ${runId}`);
  const back = runLink(runId), error = errorBox('agent-error');
  fill(ctx.el, crumbs(h('a', { href: back, class: 'mono', id: 'back-to-run' }, runId), `agent #${n}`), error);
  let a = null;
  await guard(ctx, error, async () => { a = await api(`/v1/runs/${encodeURIComponent(runId)}/agents/${n}`, { signal: ctx.signal }); });
  if (!a || ctx.signal.aborted) return;
  const missing = (id, text) => h('pre', { id, class: 'muted' }, text);
  const transcript = h('div', { id: 'transcript', class: 'transcript' });
  const turns = transcriptTurns(a.transcript);
  if (!turns.length) {
    // The journal keeps a transcript only for calls of more than one turn: show the one turn.
    transcript.dataset.synthesized = 'true';
    turns.push(turn(1, 'user', 'text', 'Prompt', a.prompt ?? '(not recorded)'),
      turn(2, 'assistant', 'text', a.error ? 'Model (failed)' : 'Model',
        a.result == null ? a.error ?? '(no answer)' : pretty(a.result), Boolean(a.error)));
  }
  build(ctx.el, null, [
    pageHead(h('h1', {}, `Agent #${a.n}`, a.label ? ` · ${a.label}` : ''), badge(agentState(a), { id: 'agent-status' })),
    a.error && h('div', { class: 'error', id: 'agent-error-message' }, h('p', {}, `${a.error_kind || 'error'}: ${a.error}`)),
    facts([
      ['Run', h('a', { href: back, class: 'mono' }, runId)], ['Phase', a.phase], ['Model', a.model],
      ['Replayed', a.replayed && 'yes (answered from the journal)'],
      ['Tokens', `${num(tokenTotal(a.tokens))} (${tokenParts(a.tokens)})`], ['Cost', money(a.cost)],
      ['Queued', when(a.queued)], ['Started', a.started && when(a.started)], ['Finished', a.finished && when(a.finished)],
      ['Duration', a.duration_ms != null ? duration(a.duration_ms) : null],
    ]),
    section('Prompt', a.prompt == null ? missing('agent-prompt', '(not recorded)') : longText(a.prompt, { id: 'agent-prompt' })),
    section('Options', longText(pretty(a.options ?? null), { id: 'agent-options' })),
    section('Result', a.result == null ? missing('agent-result', '(none)') : longText(pretty(a.result), { id: 'agent-result' })),
    section('Transcript', build(transcript, null, turns)),
    h('p', {}, h('a', { href: back }, '← Back to the run')),
  ]);
}

/** The journal's transcript, `[{role, content: [text | tool_use | tool_result blocks]}]`, as one
 *  `.turn` per block; anything of another shape is shown as JSON rather than dropped. */
function transcriptTurns(transcript) {
  if (transcript == null) return [];
  const messages = Array.isArray(transcript) ? transcript : Array.isArray(transcript.messages) ? transcript.messages : [transcript];
  const toolNames = new Map(), out = [];
  const add = (...args) => out.push(turn(out.length + 1, ...args));
  messages.forEach((message, i) => {
    const role = typeof message?.role === 'string' ? message.role : 'message';
    const content = message?.content;
    const blocks = typeof content === 'string' ? [content] : Array.isArray(content) ? content : [message];
    const who = role === 'assistant' ? 'Model' : role === 'user' ? (i === 0 ? 'Prompt' : 'User') : role;
    if (!blocks.length) add(role, 'text', who, '(empty)');
    for (const block of blocks) {
      if (typeof block === 'string' || block?.type === 'text') {
        add(role, 'text', who, String(block?.text ?? block));
      } else if (block?.type === 'tool_use') {
        toolNames.set(block.id, block.name);
        add(role, 'tool_use', `Tool call: ${block.name ?? '?'}`, pretty(block.input ?? null));
      } else if (block?.type === 'tool_result') {
        const name = toolNames.get(block.tool_use_id ?? block.id);
        const text = Array.isArray(block.content)
          ? block.content.map((c) => (c?.type === 'text' ? c.text : pretty(c))).join('\n') : pretty(block.content ?? '');
        add(role, 'tool_result', `Tool result${name ? `: ${name}` : ''}${block.is_error ? ' (error)' : ''}`, text, block.is_error);
      } else {
        add(role, cls(block?.type) || 'other', block?.type ? `${who}: ${block.type}` : who, pretty(block));
      }
    }
  });
  return out;
}

const turn = (n, role, kind, heading, text, isError = false) => h('article', {
  class: `turn turn-${cls(kind)} role-${cls(role)}${isError ? ' turn-error' : ''}`, 'data-role': role, 'data-kind': kind,
}, h('h3', {}, h('span', { class: 'turn-n' }, n), heading), longText(text));

// ---- #/new ----------------------------------------------------------------------------------

/** The run fields: [key, element id, label, tag, attributes, help]. */
const RUN_FIELDS = [
  ['args', 'new-args', 'Arguments (JSON)', 'textarea', { rows: 3, class: 'mono', placeholder: '{"glob": "src/*.rs"}' }, 'Empty: no args.'],
  ['root', 'new-root', 'Root', 'input', { type: 'text' }, 'A root name the operator mapped.'],
  ['provider', 'new-provider', 'Provider', 'input', { type: 'text', placeholder: 'sim' }],
  ['model', 'new-model', 'Model', 'input', { type: 'text' }],
  ['budget', 'new-budget', 'Token budget', 'input', { type: 'number', min: 0, step: 1 }, 'budget_tokens; empty: the tenant default.'],
  ['latency', 'new-sim-latency', 'Simulated latency (sim provider)', 'input', { type: 'number', min: 0, step: 1 }, 'ms per request.'],
];

function newPage() {
  const ctx = enter('New run');
  let saved = {};
  try { saved = JSON.parse(sessionStorage.getItem(FORM_KEY) || '{}') || {}; } catch { /* start empty */ }
  const f = {
    workflow: h('select', { id: 'new-workflow', name: 'workflow' }, h('option', { value: '' }, '— paste a script —')),
    script: h('textarea', { id: 'new-script', name: 'script', rows: 14, class: 'mono', spellcheck: 'false',
      placeholder: "export const meta = { name: 'x', description: '…' }\nreturn await agent('…')" }),
    file: h('input', { id: 'new-file', type: 'file', accept: '.js,.mjs,text/javascript,application/javascript' }),
  };
  for (const [key, id, , tag, attrs] of RUN_FIELDS) {
    f[key] = h(tag, { id, name: key, autocomplete: 'off', spellcheck: 'false', ...attrs });
  }
  const keys = Object.keys(f).filter((key) => key !== 'file');
  for (const key of keys) if (typeof saved[key] === 'string' && key !== 'workflow') f[key].value = saved[key];
  const errors = { script: errorBox('new-script-error'), args: errorBox('new-args-error'), general: errorBox('new-error') };
  const planButton = h('button', { id: 'plan-button', type: 'submit' }, 'Plan');
  const card = h('section', { id: 'plan-card', class: 'card plan-card', 'aria-labelledby': 'plan-title', hidden: true });
  const field = (label, input, help, error) => h('div', { class: 'field' },
    h('label', { for: input.id }, label), input, help && h('p', { class: 'help' }, help), error);
  const scriptBlock = h('div', { class: 'script-block' },
    field('Script', f.script, 'Paste a JavaScript workflow, or load a file.'), field('Load a .js file', f.file));
  const form = h('form', { id: 'new-form', novalidate: true },
    h('fieldset', {}, h('legend', {}, 'Workflow'),
      field('Uploaded workflow', f.workflow, 'Or run one uploaded with PUT /v1/workflows.'), scriptBlock, errors.script),
    h('fieldset', { class: 'grid' }, h('legend', {}, 'Run'), RUN_FIELDS.map(([key, , label, , , help]) => key === 'args'
      ? h('div', { class: 'wide' }, field(label, f.args, help, errors.args)) : field(label, f[key], help))),
    errors.general,
    h('div', { class: 'actions' }, planButton));
  fill(ctx.el, pageHead(h('h1', {}, 'New run')), form, card);

  // Nothing typed is lost: every change is kept for this tab, and errors never clear the form.
  const save = () => sessionStorage.setItem(FORM_KEY, JSON.stringify(Object.fromEntries(keys.map((k) => [k, f[k].value]))));
  const syncChoice = () => scriptBlock.classList.toggle('unused', Boolean(f.workflow.value));
  form.addEventListener('input', () => { save(); card.hidden = true; }); // a changed form needs a new plan
  form.addEventListener('change', () => { save(); syncChoice(); });
  f.file.addEventListener('change', async () => {
    const file = f.file.files?.[0];
    if (!file) return;
    f.script.value = await file.text();
    f.workflow.value = '';
    save();
    syncChoice();
  });
  api('/v1/workflows', { signal: ctx.signal }).then((data) => {
    for (const w of data?.workflows || []) {
      f.workflow.append(h('option', { value: w.hash }, `${w.name} (${w.kind}, ${String(w.hash).slice(0, 12)})`));
    }
    if ([...f.workflow.options].some((o) => o.value === saved.workflow)) f.workflow.value = saved.workflow;
    syncChoice();
  }).catch(() => { /* no list: pasting a script still works */ });

  const say = (box, message) => { showError(errors[box], { message }); return null; };
  /** The request body, or null after saying what is wrong next to its field. */
  const request = () => {
    const body = f.workflow.value ? { workflow: f.workflow.value } : { script: f.script.value, script_name: 'script.js' };
    if (!f.workflow.value && !f.script.value.trim()) return say('script', 'Paste a script, load a .js file, or pick an uploaded workflow.');
    if (f.args.value.trim()) {
      try { body.args = JSON.parse(f.args.value); } catch (e) { return say('args', `The arguments are not valid JSON: ${e.message}`); }
    }
    for (const key of ['root', 'provider', 'model']) if (f[key].value.trim()) body[key] = f[key].value.trim();
    for (const [key, name] of [['budget', 'budget_tokens'], ['latency', 'sim_latency_ms']]) {
      const input = f[key];
      if (input.validity.badInput || !/^\d*$/.test(input.value)) return say('general', `${name} must be a whole number.`);
      if (input.value !== '') body[name] = Number(input.value);
    }
    return body;
  };
  /** A server error, next to the field it is about. */
  const report = (e) => {
    const box = /^(script_invalid|invalid_script)$/.test(e.code) ? errors.script
      : e.code === 'invalid_json' || (/^invalid/.test(e.code) && /\bargs?\b|argument/i.test(e.message)) ? errors.args
        : errors.general;
    showError(box, e);
    box.scrollIntoView({ block: 'nearest' });
  };
  const clearErrors = () => Object.values(errors).forEach((box) => showError(box, null));

  let planned = null;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors();
    card.hidden = true;
    const body = request();
    if (!body) return;
    planButton.disabled = true;
    planButton.textContent = 'Planning…';
    try {
      const data = await api('/v1/runs?plan=true', { method: 'POST', body, signal: ctx.signal });
      planned = body;
      renderPlan(card, data.plan || {}, approve, () => { card.hidden = true; planButton.focus(); });
      card.hidden = false;
      card.scrollIntoView({ block: 'nearest' });
      $('#approve', card).focus({ preventScroll: true });
    } catch (e) {
      if (!gone(e, ctx)) report(e);
    } finally {
      planButton.disabled = false;
      planButton.textContent = 'Plan';
    }
  });

  async function approve(button) {
    clearErrors();
    button.disabled = true;
    try {
      const data = await api('/v1/runs', { method: 'POST', body: planned, signal: ctx.signal });
      location.hash = runLink(data.id);
    } catch (e) {
      if (!gone(e, ctx)) { report(e); button.disabled = false; }
    }
  }
}

function renderPlan(card, plan, approve, cancel) {
  const stat = (id, label, text, value) => h('div', {}, h('dt', {}, label), h('dd', { id, 'data-value': value }, text));
  const phases = plan.phases || [];
  const sum = (pick) => phases.reduce((total, p) => total + (pick(p) || 0), 0);
  const KINDS = ['input_tokens', 'output_tokens', 'cache_read_tokens', 'cache_write_tokens'];
  const cells = (usage, agents, cost) => [h('td', { class: 'num' }, num(agents)),
    KINDS.map((kind) => h('td', { class: 'num', 'data-value': usage[kind] ?? 0 }, num(usage[kind] ?? 0))),
    h('td', { class: 'num', 'data-value': cost }, money(cost))];
  const failed = Object.entries(plan.failed || {});
  const approveButton = h('button', { id: 'approve', type: 'button', onclick: () => approve(approveButton) }, 'Approve and run');
  fill(card,
    h('h2', { id: 'plan-title' }, 'Plan'),
    h('p', { class: 'help' }, 'An estimate from a dry run against simulated answers: nothing was sent to a model.',
      plan.priced_as ? ` Priced as ${plan.priced_as}.` : ''),
    h('dl', { class: 'stats' },
      stat('plan-agents', 'Agents', String(plan.agents ?? 0), plan.agents ?? 0),
      stat('plan-tokens', 'Tokens', String(plan.tokens ?? 0), plan.tokens ?? 0),
      stat('plan-cost', 'Cost', money(plan.cost ?? 0), plan.cost ?? 0),
      stat('plan-budget', 'Budget', plan.budget == null ? 'none' : String(plan.budget), plan.budget ?? ''),
      plan.max_concurrent != null && stat('plan-concurrency', 'At most at once', num(plan.max_concurrent), plan.max_concurrent),
      plan.largest_request ? stat('plan-largest', 'Largest request', num(plan.largest_request), plan.largest_request) : null),
    plan.contention && h('p', { class: 'warn', id: 'plan-contention' }, plan.contention),
    plan.priced === false && h('p', { class: 'warn', id: 'plan-unpriced' }, 'Some models have no price: the cost counts only the priced ones.'),
    plan.incomplete && h('p', { class: 'warn', id: 'plan-incomplete' }, `The dry run did not finish: ${plan.incomplete}. The estimate covers what ran.`),
    failed.length > 0 && h('p', { class: 'warn', id: 'plan-failed' }, 'Calls that failed in the dry run (their tokens are not estimated): ',
      failed.map(([kind, count]) => `${num(count)} ${kind}`).join(', ')),
    tableWrap(h('table', { id: 'plan-table' }, h('caption', { class: 'sr-only' }, 'Estimate per phase'),
      headRow(['Phase', '#Agents', '#Input', '#Output', '#Cache read', '#Cache write', '#Cost', 'Models']),
      h('tbody', {}, phases.map((p) => h('tr', { 'data-plan-phase': p.name ?? '' },
        h('th', { scope: 'row' }, p.name || '(no phase)'), cells(p.usage || {}, p.agents, p.cost),
        h('td', { class: 'small' }, (p.models || []).map((m) => `${m.model} × ${num(m.agents)}`).join(', '))))),
      h('tfoot', {}, h('tr', { class: 'total', 'data-plan-total': '' }, h('th', { scope: 'row' }, 'Total'),
        cells(Object.fromEntries(KINDS.map((kind) => [kind, sum((p) => p.usage?.[kind])])),
          plan.agents ?? sum((p) => p.agents), plan.cost ?? sum((p) => p.cost)), h('td', {}))))),
    h('div', { class: 'actions' }, approveButton, h('button', { id: 'cancel', type: 'button', class: 'secondary', onclick: cancel }, 'Cancel')));
}

// ---- #/usage --------------------------------------------------------------------------------

const QUOTAS = {
  tokens_per_day: 'Tokens today (UTC)', tokens_per_month: 'Tokens this month (UTC)',
  runs: 'Runs running', queued_runs: 'Runs queued', agents_in_flight: 'Agent slots in use',
  agents_per_run: 'Agents per run (a ceiling per run)', budget_per_run: 'Budget per run (a ceiling per run)',
};

function usagePage() {
  const ctx = enter('Usage');
  const tbody = h('tbody'), error = errorBox('usage-error');
  fill(ctx.el, pageHead(h('h1', {}, 'Usage')), error,
    tableWrap(h('table', { id: 'usage-table' }, h('caption', { class: 'sr-only' }, 'Use of each quota (live)'),
      headRow(['Quota', '#Used', '#Limit', 'Use']), tbody)));
  liveTenant(ctx, throttle(() => guard(ctx, error, async () => {
    const data = await api('/v1/usage', { signal: ctx.signal });
    if (ctx.signal.aborted) return;
    $('#tenant').textContent = data.tenant ?? '';
    const quotas = data.quotas || {};
    const names = [...Object.keys(QUOTAS).filter((k) => k in quotas), ...Object.keys(quotas).filter((k) => !(k in QUOTAS)).sort()];
    fill(tbody, names.map((name) => quotaRow(name, quotas[name])));
  }), ctx.signal));
}

function quotaRow(name, { used = 0, limit = 0 } = {}) {
  const max = limit || 1, share = `${((used / max) * 100).toFixed(1)}%`;
  return h('tr', { 'data-quota': name, 'data-used': used, 'data-limit': limit, class: used >= 0.9 * max ? 'row-warn' : null },
    h('th', { scope: 'row' }, QUOTAS[name] || name, h('div', { class: 'small muted mono' }, name)),
    h('td', { class: 'num' }, num(used)),
    h('td', { class: 'num' }, num(limit)),
    h('td', { class: 'use' }, h('meter', {
      min: 0, max, low: max * 0.75, high: max * 0.9, optimum: 0, value: Math.min(used, max), title: share,
      'aria-label': `${QUOTAS[name] || name}: ${num(used)} of ${num(limit)}`,
    }), h('span', { class: 'small muted' }, ` ${share}`)));
}

// ---- Start ----------------------------------------------------------------------------------

$('#signin-form').addEventListener('submit', signIn);
$('#sign-out').addEventListener('click', () => signOut(null));
window.addEventListener('hashchange', route);
// The skip link focuses the content without touching the hash, which is the route.
$('.skip').addEventListener('click', (event) => { event.preventDefault(); $('#main').focus(); });

if (token) checkToken();
else signOut(null);
