// The JavaScript half of the workflow API (SCRIPT-API.md). Evaluated once per instance, before
// the script is compiled. `native` holds the Rust functions that reach the host (see
// script.rs); it is visible only here. The returned object is what Rust calls back.
(function (native) {
  'use strict';

  const MAX_ITEMS = 4096;

  const define = (name, value) =>
    Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });

  const kind = (v) => (v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v);

  // A value as log text: strings as they are, errors by name and message, the rest as JSON.
  const format = (v) => {
    if (typeof v === 'string') return v;
    if (v instanceof Error) return v.code ? `${v.name} [${v.code}]: ${v.message}` : `${v.name}: ${v.message}`;
    try {
      const json = JSON.stringify(v);
      return json === undefined ? String(v) : json;
    } catch {
      return String(v);
    }
  };

  // ---- Rule 4: no clock, no randomness, no timers -------------------------------------------

  const unavailable = (what, instead) =>
    function () {
      throw new Error(`${what} is not available in a workflow: runs must replay deterministically; ${instead}`);
    };
  const RealDate = Date;
  RealDate.now = unavailable('Date.now()', 'pass a time in through args, or use new Date(value)');
  const SafeDate = new Proxy(RealDate, {
    apply: unavailable('Date() without `new`', 'use new Date(value) with an explicit time'),
    construct(target, argv, newTarget) {
      if (argv.length === 0) {
        unavailable('new Date() without an argument', 'pass a time in through args, or use new Date(value)')();
      }
      return Reflect.construct(target, argv, newTarget);
    },
  });
  RealDate.prototype.constructor = SafeDate;
  define('Date', SafeDate);
  Math.random = unavailable('Math.random()', 'derive variation from the item index or from args');
  define('performance', Object.freeze({ now: unavailable('performance.now()', 'there is no clock') }));
  for (const timer of ['setTimeout', 'setInterval', 'setImmediate']) {
    define(timer, unavailable(`${timer}()`, 'there are no timers; agent calls already retry on their own'));
  }
  define('fetch', function fetch() {
    throw new Error('fetch() is not available in a workflow: there is no network; use agent() or tools');
  });

  // ---- Rule 6: agent ------------------------------------------------------------------------

  // Resolvers of the agent calls still running on the host, by call id.
  const pending = new Map();

  function agent(prompt, opts) {
    let id;
    try {
      if (typeof prompt !== 'string') {
        throw new TypeError(`agent(prompt, opts): prompt must be a string, not ${kind(prompt)}`);
      }
      id = native.agentStart(prompt, opts);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
  }

  function settle(id, ok, value) {
    const call = pending.get(id);
    if (call === undefined) return;
    pending.delete(id);
    (ok ? call.resolve : call.reject)(value);
  }

  // ---- Rules 7–9: parallel, pipeline --------------------------------------------------------

  function checkList(signature, list) {
    if (!Array.isArray(list)) {
      throw new TypeError(`${signature}: the first argument must be an array, not ${kind(list)}`);
    }
    if (list.length > MAX_ITEMS) {
      throw new RangeError(
        `${signature}: ${list.length} items is more than the limit of ${MAX_ITEMS}; ` +
          `process them in batches of at most ${MAX_ITEMS}`,
      );
    }
  }

  // A failed slot becomes null (the spec); the progress log says why, so that a script whose
  // results are all null can be debugged.
  const failed = (what, index, error) => native.log(`${what} failed for item ${index}, which becomes null: ${format(error)}`);

  async function parallel(thunks) {
    checkList('parallel(thunks)', thunks);
    return Promise.all(
      thunks.map(async (thunk, index) => {
        try {
          // A promise instead of a thunk (`parallel(xs.map(x => agent(x)))`) is awaited as it is.
          return await (typeof thunk === 'function' ? thunk() : thunk);
        } catch (e) {
          failed('parallel', index, e);
          return null;
        }
      }),
    );
  }

  async function pipeline(items, ...stages) {
    checkList('pipeline(items, ...stages)', items);
    stages.forEach((stage, i) => {
      if (typeof stage !== 'function') {
        throw new TypeError(`pipeline(items, ...stages): stage ${i + 1} must be a function, not ${kind(stage)}`);
      }
    });
    return Promise.all(
      items.map(async (item, index) => {
        let value = item;
        for (let s = 0; s < stages.length; s++) {
          try {
            value = await stages[s](value, item, index);
          } catch (e) {
            failed(`pipeline stage ${s + 1}`, index, e);
            return null;
          }
        }
        return value;
      }),
    );
  }

  // ---- Rules 10–12: phase, log, budget, workflow --------------------------------------------

  function phase(title) {
    native.phase(format(title));
  }

  function log(...parts) {
    native.log(parts.map(format).join(' '));
  }

  const budget = Object.freeze({
    get total() {
      return native.budgetTotal() ?? null;
    },
    spent() {
      return native.budgetSpent();
    },
    remaining() {
      const left = native.budgetRemaining();
      return left ?? Infinity;
    },
  });

  // A name (`review-changes`) is looked up as a file of the run's root, in this order; a path
  // (with a `/` or ending in `.js`) is read as it is.
  const workflowPaths = (nameOrPath) =>
    nameOrPath.includes('/') || /\.[cm]?js$/.test(nameOrPath)
      ? [nameOrPath]
      : [`workflows/${nameOrPath}.js`, `${nameOrPath}.js`];

  // The run's arguments of a nested workflow: a JSON copy, as `args` of a run would be.
  const jsonCopy = (value, what) => {
    if (value === undefined) return undefined;
    let json;
    try {
      json = JSON.stringify(value);
    } catch (e) {
      throw new TypeError(`${what} must be JSON-serialisable: ${format(e)}`);
    }
    return json === undefined ? undefined : JSON.parse(json);
  };

  // Rule 12: the other workflow's script is read from the run's root through the host (the
  // runtime has no filesystem), checked like any script, and run in its own function scope with
  // its own `args`; it shares the globals, and with them the run's caps and budget. Its
  // `workflow` is `nested`, so it cannot start another one.
  async function workflow(nameOrPath, args) {
    string(nameOrPath, 'workflow(nameOrPath, args): nameOrPath');
    const copy = jsonCopy(args, 'workflow(nameOrPath, args): args');
    const paths = workflowPaths(nameOrPath);
    let make;
    for (const path of paths) {
      try {
        make = native.loadWorkflow(path);
        break;
      } catch (e) {
        if (e?.code !== 'not-found') throw e;
      }
    }
    if (make === undefined) {
      const error = new Error(
        `workflow(${JSON.stringify(nameOrPath)}): no such workflow in the run's root ` +
          `(looked for ${paths.join(', ')}); pass a path relative to the root, such as 'workflows/name.js'`,
      );
      error.name = 'WorkflowError';
      error.code = 'not-found';
      throw error;
    }
    return make(copy, nested)();
  }

  async function nested(nameOrPath) {
    const error = new Error(
      `workflow(${JSON.stringify(String(nameOrPath))}): workflows nest one level only, and this ` +
        'script already runs inside workflow(); start it from the top-level workflow instead',
    );
    error.name = 'WorkflowError';
    error.code = 'nesting';
    throw error;
  }

  // ---- Rule 13: tools -------------------------------------------------------------------------

  const string = (v, what) => {
    if (typeof v !== 'string') throw new TypeError(`${what} must be a string, not ${kind(v)}`);
    return v;
  };
  const optionalString = (v, what) => (v === undefined || v === null ? null : string(v, what));
  const optionalCount = (v, what) => {
    if (v === undefined || v === null) return null;
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new TypeError(`${what} must be a whole number from 0 to 4294967295, not ${format(v)}`);
    }
    return v;
  };
  const options = (v, what) => {
    if (v === undefined || v === null) return {};
    if (typeof v !== 'object') throw new TypeError(`${what} must be an object, not ${kind(v)}`);
    return v;
  };

  const tools = Object.freeze({
    read: (path) => native.read(string(path, 'tools.read(path): path')),
    glob: (pattern) => native.glob(string(pattern, 'tools.glob(pattern): pattern')),
    grep(pattern, opts) {
      const o = options(opts, 'tools.grep(pattern, opts): opts');
      return native.grep(
        string(pattern, 'tools.grep(pattern, opts): pattern'),
        optionalString(o.glob, 'tools.grep: opts.glob'),
        Boolean(o.ignoreCase),
        optionalCount(o.maxMatches, 'tools.grep: opts.maxMatches'),
      );
    },
    git: Object.freeze({
      log(opts) {
        const o = options(opts, 'tools.git.log(opts): opts');
        return native.gitLog(
          optionalString(o.path, 'tools.git.log: opts.path'),
          optionalCount(o.max, 'tools.git.log: opts.max'),
        );
      },
      show: (rev, path) =>
        native.gitShow(string(rev, 'tools.git.show(rev, path): rev'), optionalString(path, 'tools.git.show: path')),
      diff: (range) => native.gitDiff(optionalString(range, 'tools.git.diff(range): range')),
      status: () => native.gitStatus(),
    }),
  });

  define('agent', agent);
  define('parallel', parallel);
  define('pipeline', pipeline);
  define('phase', phase);
  define('log', log);
  define('budget', budget);
  define('workflow', workflow);
  define('tools', tools);
  define('console', Object.freeze({ log, info: log, warn: log, error: log, debug: log }));

  return { settle };
});
