// A minimal Corral workflow as a componentize-js (StarlingMonkey) component, implementing the
// `workflow` world of ../../wit directly (not the bundled QuickJS script runtime).
//
// It globs a few files, greps and reads them, starts one reviewer agent per file without
// blocking (a fan-out collected with `wait`), then asks one summariser with `call`. It also tries
// `fetch`, which Corral must deny: the failure is caught and logged.
//
// Build: see README.md in this folder.

import { start, wait, call } from 'corral:workflow/agents@0.1.1';
import { read, glob, grep } from 'corral:workflow/tools@0.1.1';
import { phase, log } from 'corral:workflow/progress@0.1.1';
import { total, spent, remaining } from 'corral:workflow/budget@0.1.1';

// An imported function returning `result<T, E>` throws on `err`; the WIT error variant is the
// thrown value's `payload` (`{ tag, val }`).
function describe(error) {
  const payload = error && error.payload !== undefined ? error.payload : error;
  if (payload && typeof payload === 'object' && 'tag' in payload) return `${payload.tag}: ${payload.val}`;
  return String(payload);
}

function options(extra) {
  return { label: undefined, phase: undefined, model: undefined, effort: undefined, schema: undefined,
    tools: undefined, maxTokens: undefined, maxTurns: undefined, timeoutMs: undefined, ...extra };
}

async function tryNetwork() {
  try {
    const response = await fetch('http://127.0.0.1:9/');
    return `connected (network was NOT denied): HTTP ${response.status}`;
  } catch (error) {
    return `denied: ${error && error.name}: ${error && error.message}`;
  }
}

// `run: func(args-json: string) -> result<string, string>`: returning gives `ok`, throwing a
// string gives `err` (an uncaught `Error` would trap, so `run` turns it into a string). An async
// export is allowed: componentize-js runs the event loop until the promise settles.
export async function run(argsJson) {
  try {
    return await main(argsJson);
  } catch (error) {
    throw typeof error === 'string' ? error : `${error && error.name}: ${error && error.message}`;
  }
}

async function main(argsJson) {
  let args = argsJson ? JSON.parse(argsJson) : null;
  if (!args || typeof args !== 'object') args = {};
  const pattern = args.glob ?? '**/*.rs';
  const maxFiles = Number(args.maxFiles ?? 3);

  console.log(`js-component workflow: glob='${pattern}' maxFiles=${maxFiles}`);
  const network = await tryNetwork();
  log(`network: ${network}`);
  console.error(`network: ${network}`);

  phase('Scan');
  let files;
  try {
    files = glob(pattern).slice(0, maxFiles);
  } catch (error) {
    throw `glob failed: ${describe(error)}`;
  }
  let hits = [];
  try {
    hits = grep('TODO|FIXME', { glob: pattern, ignoreCase: true, maxMatches: 20 });
  } catch (error) {
    log(`grep failed: ${describe(error)}`);
  }
  log(`${files.length} files, ${hits.length} TODO/FIXME hits`);

  phase('Review');
  const started = new Map();
  for (const path of files) {
    let source;
    try {
      source = read(path);
    } catch (error) {
      log(`read ${path}: ${describe(error)}`);
      continue;
    }
    try {
      const id = start(`Review ${path} for bugs; answer in one paragraph.\n\n${source.slice(0, 4000)}`,
        options({ label: path, tools: ['read', 'grep'] }));
      started.set(id, path);
    } catch (error) {
      log(`start ${path}: ${describe(error)}`);
    }
  }

  const reviews = {};
  let pending = [...started.keys()];
  while (pending.length > 0) {
    for (const completion of wait(pending)) {
      pending = pending.filter(id => id !== completion.id);
      const path = started.get(completion.id);
      if (completion.outcome.tag === 'ok') {
        reviews[path] = completion.outcome.val.text;
      } else {
        reviews[path] = null;
        log(`review ${path}: ${describe(completion.outcome.val)}`);
      }
    }
  }

  phase('Summary');
  let summary = null;
  const joined = Object.entries(reviews).filter(([, r]) => r).map(([p, r]) => `${p}: ${r}`).join('\n\n');
  if (joined) {
    try {
      summary = call(`Summarise these reviews:\n${joined}`, options({ label: 'summary', model: 'haiku' })).text;
    } catch (error) {
      log(`summary: ${describe(error)}`);
    }
  }

  const bigint = value => (typeof value === 'bigint' ? Number(value) : value ?? null);
  const result = {
    files,
    todoHits: hits.length,
    reviews,
    summary,
    network,
    budget: { total: bigint(total()), spent: bigint(spent()), remaining: bigint(remaining()) },
  };
  console.log(`js-component workflow: done, ${Object.keys(reviews).length} reviews`);
  return JSON.stringify(result);
}
