// The web APIs of every Wasmbase JS function, built on the engine's natives
// (`__wb`, see natives.rs). Runs once, inside the snapshot: it costs nothing
// per request. Bodies are buffered (Uint8Array); streams come later.
(function () {
  "use strict";
  const wb = globalThis.__wb;
  Object.defineProperty(globalThis, "__wb", { value: wb, enumerable: false, writable: false, configurable: false });
  const hidden = (name, value) =>
    Object.defineProperty(globalThis, name, { value, enumerable: false, writable: true, configurable: true });
  const define = hidden;
  // Natives take UTF-8: a string with a lone surrogate (an emoji cut in half)
  // becomes well-formed (U+FFFD) on the way, as TextEncoder does.
  const wf = (s) => String(s).toWellFormed();

  Object.defineProperty(Math, "random", { value: wb.mathRandom, writable: true, configurable: true });

  // ---- errors ---------------------------------------------------------
  const DOM_CODES = { IndexSizeError: 1, NotFoundError: 8, NotSupportedError: 9, InvalidStateError: 11, SyntaxError: 12, InvalidAccessError: 15, TypeMismatchError: 17, QuotaExceededError: 22, TimeoutError: 23, DataCloneError: 25, AbortError: 20, InvalidCharacterError: 5, OperationError: 0 };
  class DOMException extends Error {
    constructor(message = "", name = "Error") {
      super(message);
      Object.defineProperty(this, "name", { value: name, configurable: true, writable: true });
    }
    get code() { return DOM_CODES[this.name] || 0; }
  }
  define("DOMException", DOMException);

  // ---- bytes ----------------------------------------------------------
  function isView(x) { return ArrayBuffer.isView(x); }
  function bytesOf(x) {
    if (x instanceof Uint8Array) return x;
    if (x instanceof ArrayBuffer) return new Uint8Array(x);
    if (isView(x)) return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
    throw new TypeError("expected an ArrayBuffer or an ArrayBufferView");
  }
  function concat(a, b) {
    const out = new Uint8Array(a.length + b.length);
    out.set(a, 0);
    out.set(b, a.length);
    return out;
  }
  function toBuffer(u8) {
    return u8.byteOffset === 0 && u8.byteLength === u8.buffer.byteLength ? u8.buffer : u8.slice().buffer;
  }

  class TextEncoder {
    get encoding() { return "utf-8"; }
    encode(input = "") { return wb.utf8Encode(wf(input)); }
    encodeInto(input, dest) {
      const s = String(input);
      let read = 0, written = 0;
      for (const ch of s) {
        const b = wb.utf8Encode(wf(ch));
        if (written + b.length > dest.length) break;
        dest.set(b, written);
        written += b.length;
        read += ch.length;
      }
      return { read, written };
    }
  }
  define("TextEncoder", TextEncoder);

  class TextDecoder {
    constructor(label = "utf-8", options = {}) {
      const l = String(label).trim().toLowerCase();
      if (l !== "utf-8" && l !== "utf8" && l !== "unicode-1-1-utf-8") throw new RangeError(`The encoding label provided ('${label}') is not supported`);
      this._fatal = !!(options && options.fatal);
      this._ignoreBOM = !!(options && options.ignoreBOM);
      this._pending = null;
      this._started = false;
    }
    get encoding() { return "utf-8"; }
    get fatal() { return this._fatal; }
    get ignoreBOM() { return this._ignoreBOM; }
    decode(input, options = {}) {
      let b = input === undefined || input === null ? new Uint8Array(0) : bytesOf(input);
      if (this._pending) b = concat(this._pending, b);
      const stream = !!(options && options.stream);
      let text, held;
      try {
        [text, held] = wb.utf8Decode(b, this._fatal, stream);
      } catch (e) {
        this._pending = null;
        this._started = false;
        throw e;
      }
      this._pending = held ? b.slice(b.length - held) : null;
      if (!this._started && !this._ignoreBOM && text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      if (text.length || held) this._started = true;
      if (!stream) {
        this._started = false;
        this._pending = null;
      }
      return text;
    }
  }
  define("TextDecoder", TextDecoder);

  define("btoa", function btoa(data) {
    const s = String(data);
    const b = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c > 255) throw new DOMException("The string to be encoded contains characters outside of the Latin1 range.", "InvalidCharacterError");
      b[i] = c;
    }
    return wb.b64encode(b);
  });
  define("atob", function atob(data) {
    let b;
    try {
      b = wb.b64decode(String(data));
    } catch (e) {
      throw new DOMException("The string to be decoded is not correctly encoded.", "InvalidCharacterError");
    }
    let out = "";
    for (let i = 0; i < b.length; i += 8192) out += String.fromCharCode.apply(null, b.subarray(i, i + 8192));
    return out;
  });

  // ---- console --------------------------------------------------------
  function inspect(v, depth = 0, seen = new Set()) {
    if (typeof v === "string") return depth ? JSON.stringify(v) : v;
    if (v === null || typeof v !== "object" && typeof v !== "function") return String(v);
    if (typeof v === "function") return `[Function: ${v.name || "anonymous"}]`;
    if (v instanceof Error) return v.stack ? `${v.name}: ${v.message}\n${v.stack}`.trimEnd() : `${v.name}: ${v.message}`;
    if (seen.has(v)) return "[Circular]";
    if (depth > 4) return Array.isArray(v) ? "[Array]" : "[Object]";
    seen.add(v);
    try {
      if (Array.isArray(v)) return `[ ${v.map((x) => inspect(x, depth + 1, seen)).join(", ")} ]`;
      if (v instanceof Date) return v.toISOString();
      if (v instanceof Map) return `Map(${v.size}) { ${[...v].map(([k, x]) => `${inspect(k, depth + 1, seen)} => ${inspect(x, depth + 1, seen)}`).join(", ")} }`;
      if (v instanceof Set) return `Set(${v.size}) { ${[...v].map((x) => inspect(x, depth + 1, seen)).join(", ")} }`;
      if (isView(v)) return `${v.constructor.name}(${v.length}) [ ${Array.from(v).slice(0, 64).join(", ")} ]`;
      if (typeof v.toString === "function" && v.toString !== Object.prototype.toString && (v instanceof URL || v instanceof URLSearchParams)) return v.toString();
      const keys = Object.keys(v);
      const body = keys.map((k) => `${/^[A-Za-z_$][\w$]*$/.test(k) ? k : JSON.stringify(k)}: ${inspect(v[k], depth + 1, seen)}`).join(", ");
      const name = v.constructor && v.constructor !== Object && v.constructor.name ? v.constructor.name + " " : "";
      return keys.length ? `${name}{ ${body} }` : `${name}{}`;
    } finally {
      seen.delete(v);
    }
  }
  function format(args) {
    if (typeof args[0] === "string" && args.length > 1 && /%[sdifoOjc%]/.test(args[0])) {
      let i = 1;
      const head = args[0].replace(/%[sdifoOjc%]/g, (m) => {
        if (m === "%%") return "%";
        if (i >= args.length) return m;
        const a = args[i++];
        switch (m) {
          case "%s": return typeof a === "string" ? a : inspect(a, 1);
          case "%d": case "%i": return String(parseInt(a));
          case "%f": return String(parseFloat(a));
          case "%c": return "";
          default: return inspect(a, 1);
        }
      });
      return [head, ...args.slice(i).map((a) => inspect(a))].join(" ");
    }
    return args.map((a) => inspect(a)).join(" ");
  }
  const out = (level, text) => wb.log(level, wf(text));
  const counts = new Map();
  const timers = new Map();
  const console = {
    log: (...a) => out("info", format(a)),
    info: (...a) => out("info", format(a)),
    debug: (...a) => out("debug", format(a)),
    trace: (...a) => out("debug", format(a) + "\n" + (new Error().stack || "")),
    warn: (...a) => out("warn", format(a)),
    error: (...a) => out("error", format(a)),
    dir: (v) => out("info", inspect(v)),
    table: (v) => out("info", inspect(v)),
    assert: (cond, ...a) => { if (!cond) out("error", "Assertion failed" + (a.length ? ": " + format(a) : "")); },
    count: (label = "default") => { const n = (counts.get(label) || 0) + 1; counts.set(label, n); out("info", `${label}: ${n}`); },
    countReset: (label = "default") => counts.delete(label),
    time: (label = "default") => timers.set(label, wb.now()),
    timeLog: (label = "default", ...a) => out("info", `${label}: ${(wb.now() - (timers.get(label) || wb.now())).toFixed(3)}ms ${format(a)}`.trimEnd()),
    timeEnd: (label = "default") => { out("info", `${label}: ${(wb.now() - (timers.get(label) || wb.now())).toFixed(3)}ms`); timers.delete(label); },
    group: (...a) => { if (a.length) out("info", format(a)); },
    groupEnd: () => {},
  };
  define("console", console);

  // ---- timers ---------------------------------------------------------
  const queue = new Map();
  let nextTimer = 1;
  function addTimer(fn, ms, args, repeat) {
    if (typeof fn !== "function") throw new TypeError("the callback must be a function");
    const id = nextTimer++;
    // As browsers do: a delay past 2^31 - 1 ms (or not a number) is 0.
    let delay = Math.max(0, Number(ms) || 0);
    if (delay > 2147483647) delay = 0;
    queue.set(id, { fn, args, due: wb.now() + delay, delay, repeat });
    return id;
  }
  define("setTimeout", (fn, ms, ...args) => addTimer(fn, ms, args, false));
  define("setInterval", (fn, ms, ...args) => addTimer(fn, ms, args, true));
  define("clearTimeout", (id) => { queue.delete(id); });
  define("clearInterval", (id) => { queue.delete(id); });
  define("queueMicrotask", (fn) => { Promise.resolve().then(fn); });
  // Called by the engine when no job is pending and the call's promise has
  // not settled: runs the earliest timer (waiting until it is due).
  hidden("__wbRunTimer", function () {
    let best = null;
    for (const [id, t] of queue) if (!best || t.due < best[1].due) best = [id, t];
    if (!best) return false;
    const [id, t] = best;
    wb.sleepUntil(t.due);
    if (t.repeat) t.due = wb.now() + Math.max(1, t.delay); else queue.delete(id);
    try {
      t.fn(...t.args);
    } catch (e) {
      console.error("Uncaught (in timer)", e);
    }
    return true;
  });
  // The monotonic clock starts anew in every instance: the origin is taken
  // when the instance starts (`__wbStart`), not in the snapshot.
  // (Zero in the snapshot: a build's bytes do not depend on when it ran.)
  let timeOrigin = 0;
  let wallOrigin = 0;
  hidden("__wbStart", () => { timeOrigin = wb.now(); wallOrigin = Date.now(); });
  define("performance", { now: () => wb.now() - timeOrigin, get timeOrigin() { return wallOrigin; } });

  // ---- structuredClone --------------------------------------------------
  define("structuredClone", function structuredClone(value) {
    const memo = new Map();
    function clone(v) {
      if (v === null || typeof v !== "object" && typeof v !== "function") {
        if (typeof v === "symbol") throw new DOMException("Symbol could not be cloned.", "DataCloneError");
        return v;
      }
      if (typeof v === "function") throw new DOMException(`${v.name || "function"} could not be cloned.`, "DataCloneError");
      if (memo.has(v)) return memo.get(v);
      let out;
      if (v instanceof Date) out = new Date(v.getTime());
      else if (v instanceof RegExp) out = new RegExp(v.source, v.flags);
      else if (v instanceof ArrayBuffer) out = v.slice(0);
      else if (isView(v)) {
        const buf = clone(v.buffer);
        out = v instanceof DataView ? new DataView(buf, v.byteOffset, v.byteLength) : new v.constructor(buf, v.byteOffset, v.length);
      } else if (v instanceof Map) {
        out = new Map();
        memo.set(v, out);
        for (const [k, x] of v) out.set(clone(k), clone(x));
        return out;
      } else if (v instanceof Set) {
        out = new Set();
        memo.set(v, out);
        for (const x of v) out.add(clone(x));
        return out;
      } else if (v instanceof Error) {
        const Ctor = { EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError }[v.name] || Error;
        out = new Ctor(v.message);
        if (v.stack) out.stack = v.stack;
      } else if (Array.isArray(v)) {
        out = new Array(v.length);
        memo.set(v, out);
        for (const k of Object.keys(v)) out[k] = clone(v[k]);
        return out;
      } else if (v instanceof Boolean || v instanceof Number || v instanceof String) {
        out = Object(v.valueOf());
      } else if (v instanceof Promise || v instanceof WeakMap || v instanceof WeakSet) {
        throw new DOMException(`${v.constructor.name} object could not be cloned.`, "DataCloneError");
      } else {
        out = {};
        memo.set(v, out);
        for (const k of Object.keys(v)) out[k] = clone(v[k]);
        return out;
      }
      memo.set(v, out);
      return out;
    }
    return clone(value);
  });

  // ---- URL --------------------------------------------------------------
  function percentDecode(s) {
    if (!s.includes("%")) return s;
    const bytes = [];
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c === 37 && /^[0-9A-Fa-f]{2}$/.test(s.slice(i + 1, i + 3))) {
        bytes.push(parseInt(s.slice(i + 1, i + 3), 16));
        i += 2;
      } else if (c < 128) bytes.push(c);
      else for (const b of wb.utf8Encode(s[i] + (c >= 0xd800 && c < 0xdc00 ? s[++i] || "" : ""))) bytes.push(b);
    }
    return wb.utf8Decode(new Uint8Array(bytes), false, false)[0];
  }
  function formEncode(s) {
    const b = wb.utf8Encode(wf(s));
    let out = "";
    for (const c of b) {
      if (c === 0x20) out += "+";
      else if (c >= 0x30 && c <= 0x39 || c >= 0x41 && c <= 0x5a || c >= 0x61 && c <= 0x7a || c === 0x2a || c === 0x2d || c === 0x2e || c === 0x5f) out += String.fromCharCode(c);
      else out += "%" + (c < 16 ? "0" : "") + c.toString(16).toUpperCase();
    }
    return out;
  }
  class URLSearchParams {
    constructor(init = "") {
      this._list = [];
      this._url = null;
      if (init instanceof URLSearchParams) this._list = init._list.map(([k, v]) => [k, v]);
      else if (typeof init === "object" && init !== null) {
        if (typeof init[Symbol.iterator] === "function") {
          for (const pair of init) {
            const p = [...pair];
            if (p.length !== 2) throw new TypeError("Each query pair must be an iterable [name, value] tuple");
            this._list.push([String(p[0]), String(p[1])]);
          }
        } else for (const k of Object.keys(init)) this._list.push([k, String(init[k])]);
      } else this._parse(String(init));
    }
    _parse(s) {
      this._list = [];
      if (s.startsWith("?")) s = s.slice(1);
      for (const part of s.split("&")) {
        if (!part) continue;
        const i = part.indexOf("=");
        const k = i < 0 ? part : part.slice(0, i);
        const v = i < 0 ? "" : part.slice(i + 1);
        this._list.push([percentDecode(k.replace(/\+/g, " ")), percentDecode(v.replace(/\+/g, " "))]);
      }
    }
    _update() {
      if (this._url) {
        const s = this.toString();
        this._url._apply(wb.urlSet(this._url.href, "search", s), true);
        if (!s) this._url._apply(wb.urlSet(this._url.href, "search", ""), true);
      }
    }
    get size() { return this._list.length; }
    append(k, v) { this._list.push([String(k), String(v)]); this._update(); }
    delete(k, v) { k = String(k); this._list = this._list.filter(([a, b]) => a !== k || (v !== undefined && b !== String(v))); this._update(); }
    get(k) { k = String(k); const e = this._list.find(([a]) => a === k); return e ? e[1] : null; }
    getAll(k) { k = String(k); return this._list.filter(([a]) => a === k).map(([, b]) => b); }
    has(k, v) { k = String(k); return this._list.some(([a, b]) => a === k && (v === undefined || b === String(v))); }
    set(k, v) {
      k = String(k); v = String(v);
      const i = this._list.findIndex(([a]) => a === k);
      if (i < 0) this._list.push([k, v]);
      else { this._list[i][1] = v; this._list = this._list.filter(([a], j) => a !== k || j === i); }
      this._update();
    }
    sort() { this._list = this._list.map((e, i) => [e, i]).sort((x, y) => (x[0][0] < y[0][0] ? -1 : x[0][0] > y[0][0] ? 1 : x[1] - y[1])).map(([e]) => e); this._update(); }
    forEach(fn, thisArg) { for (const [k, v] of this._list) fn.call(thisArg, v, k, this); }
    keys() { return this._list.map(([k]) => k)[Symbol.iterator](); }
    values() { return this._list.map(([, v]) => v)[Symbol.iterator](); }
    entries() { return this._list.map(([k, v]) => [k, v])[Symbol.iterator](); }
    [Symbol.iterator]() { return this.entries(); }
    toString() { return this._list.map(([k, v]) => formEncode(k) + "=" + formEncode(v)).join("&"); }
    get [Symbol.toStringTag]() { return "URLSearchParams"; }
  }
  define("URLSearchParams", URLSearchParams);

  // The native takes the base only when there is one.
  const urlParse = (url, base) => (base === undefined ? wb.urlParse(wf(url)) : wb.urlParse(wf(url), wf(base)));
  class URL {
    constructor(url, base) {
      const parts = urlParse(url instanceof URL ? url.href : url, base instanceof URL ? base.href : base);
      if (!parts) throw new TypeError(`Invalid URL: ${String(url)}`);
      this._apply(parts, false);
    }
    static canParse(url, base) { return !!urlParse(url, base); }
    static parse(url, base) { try { return new URL(url, base); } catch { return null; } }
    _apply(parts, keepParams) {
      if (!parts) return;
      this._p = parts;
      if (!keepParams || !this._sp) {
        if (!this._sp) { this._sp = new URLSearchParams(parts.search); this._sp._url = this; }
        else this._sp._parse(parts.search);
      }
    }
    _set(prop, v) {
      const parts = wb.urlSet(this._p.href, prop, wf(v));
      if (!parts) { if (prop === "href") throw new TypeError(`Invalid URL: ${String(v)}`); return; }
      this._apply(parts, false);
      if (prop === "search" || prop === "href") this._sp._parse(parts.search);
    }
    get href() { return this._p.href; } set href(v) { this._set("href", v); }
    get origin() { return this._p.origin; }
    get protocol() { return this._p.protocol; } set protocol(v) { this._set("protocol", v); }
    get username() { return this._p.username; } set username(v) { this._set("username", v); }
    get password() { return this._p.password; } set password(v) { this._set("password", v); }
    get host() { return this._p.host; } set host(v) { this._set("host", v); }
    get hostname() { return this._p.hostname; } set hostname(v) { this._set("hostname", v); }
    get port() { return this._p.port; } set port(v) { this._set("port", v); }
    get pathname() { return this._p.pathname; } set pathname(v) { this._set("pathname", v); }
    get search() { return this._p.search; } set search(v) { this._set("search", v); }
    get hash() { return this._p.hash; } set hash(v) { this._set("hash", v); }
    get searchParams() { return this._sp; }
    toString() { return this._p.href; }
    toJSON() { return this._p.href; }
    get [Symbol.toStringTag]() { return "URL"; }
  }
  define("URL", URL);

  // ---- Headers ------------------------------------------------------------
  const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
  // Names seen valid already (a regex per header per request showed in
  // profiles of the request path).
  const validNames = new Map();
  function normName(n) {
    n = String(n);
    const known = validNames.get(n);
    if (known !== undefined) return known;
    if (!TOKEN.test(n)) throw new TypeError(`Header name is not valid: ${JSON.stringify(n)}`);
    const lower = n.toLowerCase();
    if (validNames.size < 256) validNames.set(n, lower);
    return lower;
  }
  const isHttpSpace = (c) => c === 9 || c === 10 || c === 13 || c === 32;
  function normValue(v) {
    v = wf(v);
    if (v.length && (isHttpSpace(v.charCodeAt(0)) || isHttpSpace(v.charCodeAt(v.length - 1)))) v = v.replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, "");
    if (v.indexOf("\r") !== -1 || v.indexOf("\n") !== -1 || v.indexOf("\0") !== -1) throw new TypeError(`Header value is not valid: ${JSON.stringify(v)}`);
    return v;
  }
  class Headers {
    constructor(init) {
      this._map = new Map();
      this._cookies = [];
      if (init === undefined || init === null) return;
      if (init instanceof Headers) {
        for (const [k, v] of init._map) this._map.set(k, v);
        this._cookies = init._cookies.slice();
      } else if (typeof init[Symbol.iterator] === "function") {
        for (const pair of init) {
          const p = [...pair];
          if (p.length !== 2) throw new TypeError("Each header pair must be an iterable [name, value] tuple");
          this.append(p[0], p[1]);
        }
      } else if (typeof init === "object") {
        for (const k of Object.keys(init)) this.append(k, init[k]);
      } else throw new TypeError("Headers: init must be an object or a list of pairs");
    }
    append(name, value) {
      const n = normName(name), v = normValue(value);
      if (n === "set-cookie") { this._cookies.push(v); return; }
      const old = this._map.get(n);
      this._map.set(n, old === undefined ? v : `${old}, ${v}`);
    }
    set(name, value) {
      const n = normName(name), v = normValue(value);
      if (n === "set-cookie") { this._cookies = [v]; return; }
      this._map.set(n, v);
    }
    get(name) {
      const n = normName(name);
      if (n === "set-cookie") return this._cookies.length ? this._cookies.join(", ") : null;
      const v = this._map.get(n);
      return v === undefined ? null : v;
    }
    getSetCookie() { return this._cookies.slice(); }
    has(name) { const n = normName(name); return n === "set-cookie" ? this._cookies.length > 0 : this._map.has(n); }
    delete(name) { const n = normName(name); if (n === "set-cookie") this._cookies = []; else this._map.delete(n); }
    forEach(fn, thisArg) { for (const [k, v] of this) fn.call(thisArg, v, k, this); }
    *entries() {
      const names = [...this._map.keys()];
      if (this._cookies.length) names.push("set-cookie");
      names.sort();
      for (const n of names) {
        if (n === "set-cookie") for (const c of this._cookies) yield ["set-cookie", c];
        else yield [n, this._map.get(n)];
      }
    }
    *keys() { for (const [k] of this.entries()) yield k; }
    *values() { for (const [, v] of this.entries()) yield v; }
    [Symbol.iterator]() { return this.entries(); }
    get [Symbol.toStringTag]() { return "Headers"; }
  }
  define("Headers", Headers);
  // The incoming request's headers: names come lower-case from the server,
  // values already text, so the checks a script's own Headers get are skipped.
  function trustedHeaders(pairs) {
    const h = Object.create(Headers.prototype);
    h._map = new Map();
    h._cookies = [];
    for (let i = 0; i < pairs.length; i++) {
      const [k, v] = pairs[i];
      if (k === "set-cookie") h._cookies.push(v);
      else {
        const old = h._map.get(k);
        h._map.set(k, old === undefined ? v : `${old}, ${v}`);
      }
    }
    return h;
  }

  // ---- AbortController ---------------------------------------------------
  class AbortSignal {
    constructor() { this.aborted = false; this.reason = undefined; this._listeners = []; this.onabort = null; }
    addEventListener(type, fn) { if (type === "abort") this._listeners.push(fn); }
    removeEventListener(type, fn) { this._listeners = this._listeners.filter((f) => f !== fn); }
    throwIfAborted() { if (this.aborted) throw this.reason; }
    _abort(reason) {
      if (this.aborted) return;
      this.aborted = true;
      this.reason = reason === undefined ? new DOMException("This operation was aborted", "AbortError") : reason;
      const ev = { type: "abort", target: this };
      if (this.onabort) this.onabort(ev);
      for (const f of this._listeners) f(ev);
    }
    static abort(reason) { const s = new AbortSignal(); s._abort(reason); return s; }
    static timeout(ms) { const s = new AbortSignal(); setTimeout(() => s._abort(new DOMException("The operation timed out.", "TimeoutError")), ms); return s; }
  }
  class AbortController {
    constructor() { this.signal = new AbortSignal(); }
    abort(reason) { this.signal._abort(reason); }
  }
  define("AbortSignal", AbortSignal);
  define("AbortController", AbortController);

  // ---- Blob (bytes held in memory) ---------------------------------------------
  class Blob {
    constructor(parts = [], options = {}) {
      const chunks = [];
      for (const p of parts) {
        if (p instanceof Blob) chunks.push(p._bytes);
        else if (p instanceof ArrayBuffer || isView(p)) chunks.push(bytesOf(p));
        else chunks.push(wb.utf8Encode(wf(p)));
      }
      const total = chunks.reduce((n, c) => n + c.length, 0);
      this._bytes = new Uint8Array(total);
      let at = 0;
      for (const c of chunks) { this._bytes.set(c, at); at += c.length; }
      this.type = options && options.type ? String(options.type).toLowerCase() : "";
    }
    get size() { return this._bytes.length; }
    async text() { return wb.utf8Decode(this._bytes, false, false)[0]; }
    async arrayBuffer() { return this._bytes.slice().buffer; }
    async bytes() { return this._bytes.slice(); }
    slice(start, end, type) { const b = new Blob([this._bytes.slice(start, end)], { type }); return b; }
    get [Symbol.toStringTag]() { return "Blob"; }
  }
  define("Blob", Blob);

  // ---- Request / Response ---------------------------------------------------
  function extractBody(body, headers) {
    if (body === undefined || body === null) return null;
    if (typeof body === "string") {
      if (!headers.has("content-type")) headers.set("content-type", "text/plain;charset=UTF-8");
      return wb.utf8Encode(wf(body));
    }
    if (body instanceof URLSearchParams) {
      if (!headers.has("content-type")) headers.set("content-type", "application/x-www-form-urlencoded;charset=UTF-8");
      return wb.utf8Encode(body.toString());
    }
    if (body instanceof ArrayBuffer || isView(body)) return bytesOf(body).slice();
    if (body instanceof Blob) {
      if (body.type && !headers.has("content-type")) headers.set("content-type", body.type);
      return body._bytes.slice();
    }
    if (typeof body === "object" && typeof body.getReader === "function") throw new TypeError("streaming bodies are not supported yet: pass a string, an ArrayBuffer or a Uint8Array");
    return wb.utf8Encode(wf(body));
  }
  const EMPTY = new Uint8Array(0);
  class Body {
    get bodyUsed() { return this._used; }
    get body() { return this._bytes === null ? null : this._bytes; }
    _consume() {
      if (this._used) throw new TypeError("Body is unusable: Body has already been read");
      this._used = true;
      return this._bytes || EMPTY;
    }
    async arrayBuffer() { return toBuffer(this._consume()); }
    async bytes() { return this._consume().slice(); }
    async text() {
      const t = wb.utf8Decode(this._consume(), false, false)[0];
      return t.charCodeAt(0) === 0xfeff ? t.slice(1) : t;
    }
    async json() { return JSON.parse(await this.text()); }
    async formData() {
      const ct = this.headers.get("content-type") || "";
      if (!ct.startsWith("application/x-www-form-urlencoded")) throw new TypeError("formData() supports application/x-www-form-urlencoded bodies only, so far");
      const form = new URLSearchParams(await this.text());
      form.getAll = form.getAll.bind(form);
      return form;
    }
    async blob() { return new Blob([this._consume()], { type: this.headers.get("content-type") || "" }); }
  }
  const METHODS = ["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"];
  class Request extends Body {
    constructor(input, init = {}) {
      super();
      init = init || {};
      let base = null;
      if (input instanceof Request) base = input;
      const url = base ? base.url : new URL(String(input instanceof URL ? input.href : input)).href;
      let method = init.method !== undefined ? String(init.method) : base ? base.method : "GET";
      if (METHODS.includes(method.toUpperCase())) method = method.toUpperCase();
      if (!TOKEN.test(method)) throw new TypeError(`'${method}' is not a valid HTTP method.`);
      this.url = url;
      this.method = method;
      this.headers = new Headers(init.headers !== undefined ? init.headers : base ? base.headers : undefined);
      this.signal = init.signal || (base && base.signal) || new AbortSignal();
      this.redirect = init.redirect || (base && base.redirect) || "follow";
      this._used = false;
      if (init.body !== undefined && init.body !== null) {
        if (method === "GET" || method === "HEAD") throw new TypeError("Request with GET/HEAD method cannot have body.");
        this._bytes = extractBody(init.body, this.headers);
      } else this._bytes = base && base._bytes !== null ? base._consume() : null;
    }
    clone() {
      if (this._used) throw new TypeError("Request.clone: Body has already been consumed.");
      const r = new Request(this.url, { method: this.method, headers: this.headers, signal: this.signal });
      r._bytes = this._bytes;
      return r;
    }
    get [Symbol.toStringTag]() { return "Request"; }
  }
  define("Request", Request);
  // Builds the incoming request without the checks a script's own Request
  // gets (a GET may carry a body on the wire).
  function incoming(url, path, method, headers, bytes) {
    const r = Object.create(Request.prototype);
    // Checked once, on first read (most handlers never read it).
    let checked = null;
    Object.defineProperty(r, "url", {
      get() {
        if (checked === null) checked = wb.urlParse(wf(url)) ? url : `http://localhost${path}`;
        return checked;
      },
      set(v) { checked = v; },
      enumerable: true,
      configurable: true,
    });
    r.method = method;
    r.headers = headers;
    r.signal = new AbortSignal();
    r.redirect = "follow";
    r._used = false;
    r._bytes = bytes.length ? bytes : method === "GET" || method === "HEAD" ? null : bytes;
    return r;
  }

  const STATUS_TEXT = { 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified", 307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable" };
  class Response extends Body {
    constructor(body = null, init = {}) {
      super();
      init = init || {};
      const status = init.status === undefined ? 200 : Number(init.status);
      if (!Number.isInteger(status) || status < 200 || status > 599) throw new RangeError(`The status provided (${init.status}) is outside the range [200, 599].`);
      this.status = status;
      this.statusText = init.statusText !== undefined ? String(init.statusText) : "";
      this.headers = new Headers(init.headers);
      this.type = "default";
      this.url = "";
      this.redirected = false;
      this._used = false;
      if (body !== null && body !== undefined && [101, 204, 205, 304].includes(status)) throw new TypeError("Response with null body status cannot have body");
      this._bytes = extractBody(body, this.headers);
    }
    get ok() { return this.status >= 200 && this.status < 300; }
    static json(data, init = {}) {
      const text = JSON.stringify(data);
      if (text === undefined) throw new TypeError("Value is not JSON serializable");
      const r = new Response(text, init);
      if (!new Headers(init && init.headers).has("content-type")) r.headers.set("content-type", "application/json");
      return r;
    }
    static redirect(url, status = 302) {
      if (![301, 302, 303, 307, 308].includes(status)) throw new RangeError("Invalid status code");
      const r = new Response(null, { status, headers: { location: new URL(String(url)).href } });
      return r;
    }
    static error() { const r = new Response(null, { status: 200 }); r.status = 0; r.type = "error"; return r; }
    clone() {
      if (this._used) throw new TypeError("Response.clone: Body has already been consumed.");
      const r = new Response(null, { status: this.status, statusText: this.statusText, headers: this.headers });
      r._bytes = this._bytes;
      r.url = this.url;
      return r;
    }
    get [Symbol.toStringTag]() { return "Response"; }
  }
  define("Response", Response);
  function received(status, pairs, bytes, url) {
    const r = Object.create(Response.prototype);
    r.status = status;
    r.statusText = STATUS_TEXT[status] || "";
    r.headers = new Headers(pairs);
    r.type = "basic";
    r.url = url;
    r.redirected = false;
    r._used = false;
    r._bytes = bytes;
    return r;
  }

  define("fetch", async function fetch(input, init) {
    const req = input instanceof Request && init === undefined ? input : new Request(input, init);
    if (req.signal.aborted) throw req.signal.reason;
    const bytes = req._bytes ? req._consume() : EMPTY;
    const [status, pairs, body] = wb.fetch(req.method, wf(req.url), [...req.headers], bytes);
    return received(status, pairs, body, req.url);
  });

  // ---- crypto ---------------------------------------------------------------
  function hashName(h) {
    const n = typeof h === "string" ? h : h && h.name;
    const u = String(n).toUpperCase();
    if (!["SHA-1", "SHA-256", "SHA-384", "SHA-512"].includes(u)) throw new DOMException(`Unrecognized hash: ${n}`, "NotSupportedError");
    return u;
  }
  class CryptoKey {
    constructor(algorithm, extractable, usages, raw) {
      this.type = "secret";
      this.algorithm = algorithm;
      this.extractable = extractable;
      this.usages = usages;
      Object.defineProperty(this, "_raw", { value: raw });
    }
  }
  function usable(key, use) {
    if (!(key instanceof CryptoKey) || key.algorithm.name !== "HMAC") throw new DOMException("the key is not an HMAC key", "InvalidAccessError");
    if (!key.usages.includes(use)) throw new DOMException(`the key may not be used to ${use}`, "InvalidAccessError");
  }
  const subtle = {
    async digest(alg, data) { return toBuffer(wb.digest(hashName(alg), bytesOf(data))); },
    async importKey(format, keyData, algorithm, extractable, usages) {
      const name = typeof algorithm === "string" ? algorithm : algorithm.name;
      if (String(name).toUpperCase() !== "HMAC") throw new DOMException(`importKey supports HMAC only, so far (got ${name})`, "NotSupportedError");
      let raw;
      if (format === "raw") raw = bytesOf(keyData).slice();
      else if (format === "jwk" && keyData && keyData.k) raw = wb.b64decode(keyData.k.replace(/-/g, "+").replace(/_/g, "/"));
      else throw new DOMException(`key format ${format} is not supported`, "NotSupportedError");
      const hash = hashName(algorithm.hash);
      return new CryptoKey({ name: "HMAC", hash: { name: hash }, length: raw.length * 8 }, !!extractable, [...usages], raw);
    },
    async exportKey(format, key) {
      if (!key.extractable) throw new DOMException("key is not extractable", "InvalidAccessError");
      if (format !== "raw") throw new DOMException(`key format ${format} is not supported`, "NotSupportedError");
      return toBuffer(key._raw.slice());
    },
    async sign(algorithm, key, data) {
      usable(key, "sign");
      return toBuffer(wb.hmac(key.algorithm.hash.name, key._raw, bytesOf(data)));
    },
    async verify(algorithm, key, signature, data) {
      usable(key, "verify");
      const want = wb.hmac(key.algorithm.hash.name, key._raw, bytesOf(data));
      const got = bytesOf(signature);
      if (got.length !== want.length) return false;
      let diff = 0;
      for (let i = 0; i < want.length; i++) diff |= want[i] ^ got[i];
      return diff === 0;
    },
  };
  define("crypto", {
    getRandomValues(view) {
      if (!isView(view) || view instanceof Float32Array || view instanceof Float64Array || view instanceof DataView) throw new DOMException("getRandomValues takes an integer typed array", "TypeMismatchError");
      if (view.byteLength > 65536) throw new DOMException(`getRandomValues takes at most 65536 bytes, got ${view.byteLength}`, "QuotaExceededError");
      new Uint8Array(view.buffer, view.byteOffset, view.byteLength).set(wb.randomBytes(view.byteLength));
      return view;
    },
    randomUUID: () => wb.uuid(),
    subtle,
  });
  define("CryptoKey", CryptoKey);

  // ---- entry points -------------------------------------------------------
  function envGet(name) { const v = wb.env(wf(name)); return v === null ? undefined : v; }
  let served = null;
  const Deno = {
    env: {
      get: envGet,
      has: (name) => envGet(name) !== undefined,
      set() { throw new Error("Deno.env.set: a function's environment is read-only (grant variables in function.toml)"); },
      toObject() { return Object.fromEntries(wb.envAll()); },
    },
    serve(a, b) {
      const handler = typeof a === "function" ? a : b || (a && a.handler);
      if (typeof handler !== "function") throw new TypeError("Deno.serve needs a handler function");
      served = handler;
      return { finished: new Promise(() => {}), shutdown: async () => {}, ref() {}, unref() {}, addr: { transport: "tcp", hostname: "0.0.0.0", port: 0 } };
    },
  };
  define("Deno", Deno);
  // The Workers-style `env` argument: granted variables on demand.
  const env = new Proxy({}, {
    get: (_, k) => (typeof k === "string" ? envGet(k) : undefined),
    has: (_, k) => typeof k === "string" && envGet(k) !== undefined,
    ownKeys: () => wb.envAll().map(([k]) => k),
    getOwnPropertyDescriptor: (_, k) => {
      const v = typeof k === "string" ? envGet(k) : undefined;
      return v === undefined ? undefined : { value: v, enumerable: true, configurable: true, writable: false };
    },
  });

  hidden("__wbInstall", function (ns) {
    const def = ns.default;
    let fetchFn = null;
    if (def && typeof def.fetch === "function") fetchFn = (req, ctx) => def.fetch(req, env, ctx);
    else if (typeof def === "function") fetchFn = (req, ctx) => def(req, env, ctx);
    else if (typeof ns.fetch === "function") fetchFn = (req, ctx) => ns.fetch(req, env, ctx);
    else if (served) fetchFn = (req, ctx) => served(req, { remoteAddr: { transport: "tcp", hostname: "", port: 0 }, ...ctx });
    const sched = def && typeof def.scheduled === "function" ? (e, ctx) => def.scheduled(e, env, ctx) : typeof ns.scheduled === "function" ? (e, ctx) => ns.scheduled(e, env, ctx) : null;
    if (!fetchFn && !sched) throw new Error("the entry module exports no handler: use `export default { fetch(request, env, ctx) { … } }`, `Deno.serve(handler)`, or `export async function scheduled(event, env, ctx)`");
    const run = async (call) => {
      const pending = [];
      const ctx = { waitUntil: (p) => { pending.push(Promise.resolve(p)); }, passThroughOnException() {} };
      try {
        const out = await call(ctx);
        // Work handed to waitUntil finishes before the instance goes away.
        if (pending.length) {
          const done = await Promise.allSettled(pending);
          for (const d of done) if (d.status === "rejected") console.error("Uncaught (in waitUntil)", d.reason);
        }
        return out;
      } finally {
        // Timers still pending belong to this call: they never fire in the
        // next one (an instance kept with `reuse`).
        queue.clear();
      }
    };
    hidden("__wbFetch", (method, path, pairs, body) => {
      if (!fetchFn) return Promise.resolve([404, [["content-type", "application/json"]], wb.utf8Encode('{"code":"function_no_http","message":"this function has no HTTP handler (it only runs on a schedule)"}')]);
      const headers = trustedHeaders(pairs);
      const proto = (headers.get("x-forwarded-proto") || "http").split(",")[0].trim();
      const host = headers.get("host") || "localhost";
      // A Host header that is no host (anything a client sends) must not
      // make `new URL(request.url)` throw in the function: `incoming` checks.
      const req = incoming(`${proto === "https" ? "https" : "http"}://${host}${path}`, path, method, headers, body);
      return run((ctx) => fetchFn(req, ctx)).then((resp) => {
        if (!(resp instanceof Response)) throw new TypeError(`the handler must return a Response, got ${resp === null ? "null" : typeof resp}`);
        const bytes = resp._bytes === null ? EMPTY : resp._bytes;
        return [resp.status, [...resp.headers], bytes];
      });
    });
    hidden("__wbScheduled", (name, scheduledAt, runId, attempt, payload) => {
      if (!sched) return Promise.reject(new Error("this function exports no scheduled handler"));
      const event = { cron: name, name, scheduledTime: Date.parse(scheduledAt), scheduledAt, runId, attempt, payload: payload == null ? null : JSON.parse(payload) };
      return run((ctx) => sched(event, ctx));
    });
  });
})();
