// The JavaScript half of the workflow API (SCRIPT-API.md). Evaluated once per realm (the
// workflow's, and one per nested `workflow()`), before that realm's script is compiled. `native`
// holds the Rust functions that reach the host (see script.rs); it is visible only here.
// `config` is `{ nested, maxJsonDepth }`. The returned object is what Rust calls back.
(function (native, config) {
  'use strict';

  const MAX_ITEMS = 4096;
  const MAX_JSON_DEPTH = config.maxJsonDepth;
  const apply = Reflect.apply;

  const define = (name, value) =>
    Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });

  const kind = (v) => (v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v);

  // ---- JSON, bounded ---------------------------------------------------------------------------
  //
  // QuickJS's JSON.parse and JSON.stringify recurse in C on the native stack without using the
  // shadow stack its overflow check watches, so a deeply nested value would end the run with an
  // uncatchable "call stack exhausted" trap. These wrappers bound the nesting at MAX_JSON_DEPTH
  // (Rust's MAX_JSON_DEPTH, passed in) and throw a catchable RangeError past it; everything else
  // is the built-in behaviour. The runtime's own conversions (the result, logs, schemas, nested
  // workflows' args) go through them too.

  const realParse = JSON.parse;
  const realStringify = JSON.stringify;

  const tooDeep = (what) =>
    new RangeError(
      `${what}: the value nests arrays and objects more than ${MAX_JSON_DEPTH} deep, the workflow ` +
        `runtime's JSON limit (MAX_JSON_DEPTH); flatten the data, or keep the deep part as a string`,
    );

  // A replacer array as the spec reads it: the property list, without duplicates.
  const propertyList = (replacer) => {
    const list = [];
    for (let i = 0; i < replacer.length; i++) {
      const v = replacer[i];
      let key;
      if (typeof v === 'string') key = v;
      else if (typeof v === 'number' || v instanceof String || v instanceof Number) key = String(v);
      if (key !== undefined && !list.includes(key)) list.push(key);
    }
    return list;
  };
  // Number, String, Boolean and BigInt objects serialise as their primitive.
  const boxed = (v) =>
    [Number, String, Boolean, BigInt].some((Type) => {
      try {
        apply(Type.prototype.valueOf, v, []);
        return true;
      } catch {
        return false;
      }
    });
  // What a property list keeps of an object, in the list's order.
  const pick = (object, keys) => {
    const picked = {};
    for (const key of keys) {
      const v = object[key];
      if (v !== undefined) Object.defineProperty(picked, key, { value: v, writable: true, enumerable: true, configurable: true });
    }
    return picked;
  };

  const stringify = {
    stringify(value, replacer, space) {
      const user = typeof replacer === 'function' ? replacer : undefined;
      const keys = user === undefined && Array.isArray(replacer) ? propertyList(replacer) : undefined;
      // QuickJS serialises depth first and calls the replacer on each value before it descends
      // into it, with the value's holder as `this`: the holders from the outermost one (made by
      // JSON.stringify) to the current one are a path, and the current holder is on it.
      const path = [];
      function bounded(key, v) {
        if (user !== undefined) v = apply(user, this, [key, v]);
        if (v === null || typeof v !== 'object') return v;
        while (path.length > 0 && path[path.length - 1] !== this) path.pop();
        if (path.length === 0) path.push(this);
        if (path.length > MAX_JSON_DEPTH) throw tooDeep('JSON.stringify');
        if (keys !== undefined && !Array.isArray(v) && !boxed(v)) v = pick(v, keys);
        path.push(v);
        return v;
      }
      return realStringify(value, bounded, space);
    },
  }.stringify;

  const parse = {
    parse(text, reviver) {
      const source = `${text}`;
      // Text shorter than the limit cannot nest past it.
      if (source.length > MAX_JSON_DEPTH) native.checkJsonDepth(source);
      return realParse(source, reviver);
    },
  }.parse;

  for (const [name, f] of [['parse', parse], ['stringify', stringify]]) {
    Object.defineProperty(JSON, name, { value: f, writable: true, enumerable: false, configurable: true });
  }

  // A value as log text: strings as they are, errors by name and message, the rest as JSON.
  const format = (v) => {
    if (typeof v === 'string') return v;
    if (v instanceof Error) return v.code ? `${v.name} [${v.code}]: ${v.message}` : `${v.name}: ${v.message}`;
    try {
      const json = stringify(v);
      if (json !== undefined) return json;
    } catch {}
    try {
      return String(v);
    } catch {
      return `[${kind(v)}]`;
    }
  };

  // ---- No handles on other frames -------------------------------------------------------------
  //
  // With `Error.prepareStackTrace`, QuickJS hands a script CallSite objects whose getFunction()
  // returns the function of every frame on the stack: the built-ins these wrappers call, or the
  // prelude's internals. Stacks stay strings.
  Object.defineProperty(Error, 'prepareStackTrace', {
    get: () => undefined,
    set() {
      throw new TypeError('Error.prepareStackTrace is not available in a workflow: read error.stack, which is a string');
    },
    enumerable: false,
    configurable: false,
  });

  // ---- Code compiled at run time --------------------------------------------------------------
  //
  // The Function constructors compile their text with the same recursive parser as scripts: the
  // front end's bracket limit (MAX_NESTING) applies to them too.
  const guardConstructor = (Real, what) => {
    const check = (argv) => native.checkNesting(what, argv.map((a) => `${a}`).join('\n'));
    const guarded = new Proxy(Real, {
      apply(target, thisArg, argv) {
        check(argv);
        return apply(target, thisArg, argv);
      },
      construct(target, argv, newTarget) {
        check(argv);
        return Reflect.construct(target, argv, newTarget);
      },
    });
    Object.defineProperty(Real.prototype, 'constructor', { value: guarded, writable: false, enumerable: false, configurable: true });
    return guarded;
  };
  define('Function', guardConstructor(Function, 'Function()'));
  guardConstructor(Object.getPrototypeOf(async function () {}).constructor, 'AsyncFunction()');
  guardConstructor(Object.getPrototypeOf(function* () {}).constructor, 'GeneratorFunction()');
  guardConstructor(Object.getPrototypeOf(async function* () {}).constructor, 'AsyncGeneratorFunction()');

  // A proxy forwards what it has no trap for to its target, in C, by recursion that the stack
  // check cannot see (as JSON does): bound how deep proxies may wrap proxies.
  const MAX_PROXY_DEPTH = 100;
  const RealProxy = Proxy;
  const realRevocable = RealProxy.revocable;
  const proxyDepths = new WeakMap();
  const proxyDepth = (what, target, handler) => {
    const of = (v) => ((v !== null && (typeof v === 'object' || typeof v === 'function') && proxyDepths.get(v)) || 0);
    const depth = Math.max(of(target), of(handler)) + 1;
    if (depth > MAX_PROXY_DEPTH) {
      throw new RangeError(
        `${what}: proxies wrap proxies more than ${MAX_PROXY_DEPTH} deep, the workflow runtime's limit ` +
          '(MAX_PROXY_DEPTH); wrap the original object instead of the last proxy',
      );
    }
    return depth;
  };
  define(
    'Proxy',
    new RealProxy(RealProxy, {
      construct(target, argv, newTarget) {
        const depth = proxyDepth('new Proxy()', argv[0], argv[1]);
        const proxy = Reflect.construct(target, argv, newTarget);
        proxyDepths.set(proxy, depth);
        return proxy;
      },
    }),
  );
  Object.defineProperty(RealProxy, 'revocable', {
    value: {
      revocable(target, handler) {
        const depth = proxyDepth('Proxy.revocable()', target, handler);
        const result = apply(realRevocable, RealProxy, [target, handler]);
        proxyDepths.set(result.proxy, depth);
        return result;
      },
    }.revocable,
    writable: true,
    enumerable: false,
    configurable: true,
  });

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

  // Resolvers of the agent calls still running on the host, by call id. Not a Map: QuickJS
  // hashes a number key by the bits of its double, whose low bits are all zero for small
  // integers, so every call id lands in one bucket and each lookup walks all pending calls.
  // Integer property keys are atoms, hashed well.
  const pending = Object.create(null);

  function agent(prompt, opts) {
    let id;
    try {
      if (typeof prompt !== 'string') {
        throw new TypeError(`agent(prompt, opts): prompt must be a string, not ${kind(prompt)}`);
      }
      // An object schema is sent as JSON text, made here so that it is bounded like any JSON.
      const schema = opts === null || opts === undefined ? undefined : opts.schema;
      const schemaText =
        schema !== null && typeof schema === 'object' && !Array.isArray(schema) ? stringify(schema) : undefined;
      id = native.agentStart(prompt, opts, schemaText);
    } catch (e) {
      return Promise.reject(e);
    }
    const promise = new Promise((resolve, reject) => {
      pending[id] = { resolve, reject };
    });
    // Rule 15: an isolated agent's writes wait in its own overlay for the script's decision.
    if (opts === null || opts === undefined || opts.isolation !== 'worktree') return promise;
    return promise.then((result) => isolatedResult(id, result));
  }

  function isolatedResult(id, result) {
    const { files, diff } = native.isolatedChanges(id);
    let decided = null;
    const decide = (what) => {
      if (decided !== null) {
        throw new Error(`${what}: these changes were already ${decided}; keep or drop them once`);
      }
    };
    const changes = Object.freeze({
      files: Object.freeze(files),
      diff,
      keep() {
        decide('changes.keep()');
        const kept = native.keepChanges(id);
        decided = 'kept';
        return kept;
      },
      drop() {
        decide('changes.drop()');
        native.discardChanges(id);
        decided = 'dropped';
      },
    });
    return Object.freeze({ result, changes });
  }

  function settle(id, ok, value) {
    const call = pending[id];
    if (call === undefined) return;
    delete pending[id];
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
  // results are all null can be debugged. One batch logs the first failure of each kind (an
  // error's `code`, else its name) in full and counts the others, then logs one line per kind
  // with their count: a fan-out that runs out of budget logs two lines, not a thousand.
  const failureKind = (error) => {
    try {
      if (error !== null && typeof error === 'object') {
        if (typeof error.code === 'string') return error.code;
        if (typeof error.name === 'string') return error.name;
      }
    } catch {
      // A getter that throws: the kind stays generic.
    }
    return kind(error);
  };

  function failures() {
    const seen = new Map();
    return {
      failed(what, index, error) {
        const errorKind = failureKind(error);
        const key = `${what}\u0000${errorKind}`;
        const entry = seen.get(key);
        if (entry !== undefined) {
          entry.more += 1;
          return;
        }
        seen.set(key, { what, errorKind, first: index, more: 0 });
        native.log(`${what} failed for item ${index}, which becomes null: ${format(error)}`);
      },
      done() {
        for (const { what, errorKind, first, more } of seen.values()) {
          if (more > 0) {
            native.log(
              `${what} failed for ${more} more item${more === 1 ? '' : 's'} with ${errorKind} ` +
                `(as item ${first} did), which become${more === 1 ? 's' : ''} null`,
            );
          }
        }
      },
    };
  }

  async function parallel(thunks) {
    checkList('parallel(thunks)', thunks);
    const log = failures();
    const results = await Promise.all(
      thunks.map(async (thunk, index) => {
        try {
          // A promise instead of a thunk (`parallel(xs.map(x => agent(x)))`) is awaited as it is.
          return await (typeof thunk === 'function' ? thunk() : thunk);
        } catch (e) {
          log.failed('parallel', index, e);
          return null;
        }
      }),
    );
    log.done();
    return results;
  }

  async function pipeline(items, ...stages) {
    checkList('pipeline(items, ...stages)', items);
    stages.forEach((stage, i) => {
      if (typeof stage !== 'function') {
        throw new TypeError(`pipeline(items, ...stages): stage ${i + 1} must be a function, not ${kind(stage)}`);
      }
    });
    const log = failures();
    const results = await Promise.all(
      items.map(async (item, index) => {
        let value = item;
        for (let s = 0; s < stages.length; s++) {
          try {
            value = await stages[s](value, item, index);
          } catch (e) {
            log.failed(`pipeline stage ${s + 1}`, index, e);
            return null;
          }
        }
        return value;
      }),
    );
    log.done();
    return results;
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

  // What `workflow()` is asked to run (rules 12 and 16), as Rust's `startWorkflow` takes it:
  // `[text, byPath, object]`. A string with a `/` is a path relative to the root, any other
  // string a name (resolved in Rust: see script/resolve.rs); `{ scriptPath }` is a path.
  const workflowTarget = (target) => {
    if (typeof target === 'string') return [target, target.includes('/'), false];
    if (target !== null && typeof target === 'object' && !Array.isArray(target)) {
      return [string(target.scriptPath, 'workflow({ scriptPath }, args): scriptPath'), true, true];
    }
    throw new TypeError(
      `workflow(nameOrPath, args): the first argument must be a workflow's name, a path relative ` +
        `to the root, or { scriptPath }, not ${kind(target)}`,
    );
  };

  // The arguments of a nested workflow as JSON text (`undefined` for none), as a run's are.
  const jsonText = (value, what) => {
    if (value === undefined) return undefined;
    try {
      return stringify(value);
    } catch (e) {
      throw new TypeError(`${what} must be JSON-serialisable: ${format(e)}`);
    }
  };

  // Nested workflows started and not yet finished, by id.
  const workflows = new Map();

  // Rule 12: the other workflow's script is read from the run's root through the host (the
  // runtime has no filesystem) and checked like any script. The event loop then runs it in a
  // realm of its own (its own globals, this prelude with `config.nested`), so that no route from
  // it leads back to this function: only JSON text crosses, its args in and its result out. It
  // shares the run's caps and budget, which are the host's.
  async function workflow(nameOrPath, args) {
    const [target, byPath, object] = workflowTarget(nameOrPath);
    const argsJson = jsonText(args, 'workflow(nameOrPath, args): args');
    const id = native.startWorkflow(target, byPath, object, argsJson);
    return new Promise((resolve, reject) => workflows.set(id, { resolve, reject }));
  }

  // An error a nested workflow threw, rebuilt in this realm from its parts (its own realm's
  // objects never cross).
  const errorTypes = { Error, TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError };
  if (typeof InternalError === 'function') errorTypes.InternalError = InternalError;
  const rebuild = ({ name, message, code, stack }) => {
    const Type = Object.hasOwn(errorTypes, name) ? errorTypes[name] : Error;
    const error = new Type(message);
    if (error.name !== name) error.name = name;
    if (code !== undefined) error.code = code;
    if (stack !== undefined) Object.defineProperty(error, 'stack', { value: stack, writable: true, configurable: true });
    return error;
  };

  // Called by Rust when a nested workflow has finished: `ok` with its result, else with what it
  // threw (`parts` says whether that is an error's parts to rebuild).
  function finish(id, ok, value, parts) {
    const call = workflows.get(id);
    if (call === undefined) return;
    workflows.delete(id);
    if (ok) call.resolve(value);
    else call.reject(parts ? rebuild(value) : value);
  }

  async function nested(nameOrPath) {
    let shown;
    try {
      shown =
        typeof nameOrPath === 'string'
          ? JSON.stringify(nameOrPath)
          : `{ scriptPath: ${JSON.stringify(String(nameOrPath?.scriptPath))} }`;
    } catch {
      shown = '...';
    }
    const error = new Error(
      `workflow(${shown}): workflows nest one level only, and this ` +
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
    write(path, text) {
      native.write(string(path, 'tools.write(path, text): path'), string(text, 'tools.write(path, text): text'));
    },
    edit(path, oldText, newText) {
      native.edit(
        string(path, 'tools.edit(path, oldText, newText): path'),
        string(oldText, 'tools.edit(path, oldText, newText): oldText'),
        string(newText, 'tools.edit(path, oldText, newText): newText'),
      );
    },
    remove(path) {
      native.remove(string(path, 'tools.remove(path): path'));
    },
    revert(path) {
      native.revert(string(path, 'tools.revert(path): path'));
    },
    changes: () => native.changes(),
    run(command, args, opts) {
      const what = 'tools.run(command, args, opts)';
      const list = args === undefined || args === null ? [] : args;
      if (!Array.isArray(list)) throw new TypeError(`${what}: args must be an array of strings, not ${kind(list)}`);
      const strings = list.map((arg, i) => string(arg, `${what}: args[${i}]`));
      const o = options(opts, `${what}: opts`);
      return native.run(string(command, `${what}: command`), strings, optionalCount(o.timeoutMs, `${what}: opts.timeoutMs`));
    },
  });

  define('agent', agent);
  define('parallel', parallel);
  define('pipeline', pipeline);
  define('phase', phase);
  define('log', log);
  define('budget', budget);
  define('workflow', config.nested ? nested : workflow);
  define('tools', tools);
  define('console', Object.freeze({ log, info: log, warn: log, error: log, debug: log }));

  return { settle, finish, stringify };
});
