// The `wasmbase` module of JS/TS functions: the platform's capabilities with
// the shapes supabase-js users know. Types: sdk/js/wasmbase.d.ts. What a
// function may use is granted in function.toml (the build refuses imports of
// capabilities it lacks; the host checks every call again).
const wb = globalThis.__wb;

/** A failed platform call (`code` is PostgREST's or the SQLSTATE). */
export class PlatformError extends Error {
  constructor(e) {
    super(e.message);
    this.name = "PlatformError";
    this.code = e.code;
    this.details = e.details ?? null;
    this.hint = e.hint ?? null;
    this.status = e.status;
  }
}

function literal(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return `{${v.map((x) => JSON.stringify(x)).join(",")}}`;
  if (v instanceof Date) return v.toISOString();
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}
function listItem(v) {
  const s = literal(v);
  return /[,()"\s]/.test(s) ? JSON.stringify(s) : s;
}

/** A data API request under construction; `await` runs it and gives
 * `{ data, error, count, status }` as supabase-js does. */
class Query {
  constructor(schema, table) {
    this.r = { schema, table, action: "select", columns: null, filters: [], order: [], limit: null, offset: null, count: false, body: null, conflict: "error", conflictColumns: [], returning: false };
    this.one = null;
  }
  select(columns = "*", opts = {}) {
    if (this.r.action === "select") this.r.columns = columns;
    else { this.r.returning = true; this.r.columns = columns; }
    if (opts.count) this.r.count = true;
    return this;
  }
  insert(rows, opts = {}) { this.r.action = "insert"; this.r.body = rows; if (opts.count) this.r.count = true; return this; }
  upsert(rows, opts = {}) {
    this.r.action = "insert";
    this.r.body = rows;
    this.r.conflict = opts.ignoreDuplicates ? "ignore" : "merge";
    if (opts.onConflict) this.r.conflictColumns = String(opts.onConflict).split(",").map((s) => s.trim());
    return this;
  }
  update(patch) { this.r.action = "update"; this.r.body = patch; return this; }
  delete() { this.r.action = "delete"; return this; }
  filter(column, op, value) { this.r.filters.push([column, `${op}.${value}`]); return this; }
  eq(c, v) { return this.filter(c, "eq", literal(v)); }
  neq(c, v) { return this.filter(c, "neq", literal(v)); }
  gt(c, v) { return this.filter(c, "gt", literal(v)); }
  gte(c, v) { return this.filter(c, "gte", literal(v)); }
  lt(c, v) { return this.filter(c, "lt", literal(v)); }
  lte(c, v) { return this.filter(c, "lte", literal(v)); }
  like(c, p) { return this.filter(c, "like", p); }
  ilike(c, p) { return this.filter(c, "ilike", p); }
  is(c, v) { return this.filter(c, "is", v === null ? "null" : String(v)); }
  in(c, values) { return this.filter(c, "in", `(${values.map(listItem).join(",")})`); }
  contains(c, v) { return this.filter(c, "cs", literal(v)); }
  containedBy(c, v) { return this.filter(c, "cd", literal(v)); }
  not(c, op, v) { return this.filter(c, `not.${op}`, literal(v)); }
  or(expr) { this.r.filters.push(["or", `(${expr})`]); return this; }
  match(obj) { for (const k of Object.keys(obj)) this.eq(k, obj[k]); return this; }
  order(column, opts = {}) { this.r.order.push([column, opts.ascending === false, opts.nullsFirst ?? null]); return this; }
  limit(n) { this.r.limit = n; return this; }
  range(from, to) { this.r.offset = from; this.r.limit = to - from + 1; return this; }
  single() { this.one = "single"; return this; }
  maybeSingle() { this.one = "maybe"; return this; }
  then(resolve, reject) { return this.execute().then(resolve, reject); }
  async execute() {
    const [ok, payload, affected, total] = wb.dataRun(JSON.stringify(this.r));
    if (!ok) {
      const e = JSON.parse(payload);
      return { data: null, error: e, count: null, status: e.status };
    }
    let data = payload === "null" || payload == null ? null : JSON.parse(payload);
    if (this.one && Array.isArray(data)) {
      if (data.length > 1 || (this.one === "single" && data.length === 0)) {
        const error = { code: "PGRST116", message: "JSON object requested, multiple (or no) rows returned", details: `The result contains ${data.length} rows`, hint: null, status: 406 };
        return { data: null, error, count: null, status: 406 };
      }
      data = data[0] ?? null;
    }
    const status = this.r.action === "insert" ? 201 : this.r.returning || this.r.action === "select" ? 200 : 204;
    return { data, error: null, count: total ?? (this.r.count ? affected : null), status };
  }
}

/** The data API as the function's principal (`db = "caller"` or `"service"`). */
export const db = {
  from: (table) => new Query(null, table),
  schema: (schema) => ({ from: (table) => new Query(schema, table), rpc: (fn, args = {}) => rpc(schema, fn, args) }),
  rpc: (fn, args = {}) => rpc(null, fn, args),
};
async function rpc(schema, fn, args) {
  const [ok, payload] = schema === null ? wb.dataRpc(undefined, fn, JSON.stringify(args)) : wb.dataRpc(schema, fn, JSON.stringify(args));
  if (!ok) { const e = JSON.parse(payload); return { data: null, error: e, status: e.status }; }
  return { data: payload == null ? null : JSON.parse(payload), error: null, status: 200 };
}

function param(v) {
  if (v === null || v === undefined) return ["null", null];
  if (typeof v === "boolean") return ["bool", v];
  if (typeof v === "number") return Number.isInteger(v) && Math.abs(v) <= Number.MAX_SAFE_INTEGER ? ["int", v] : ["float", v];
  if (typeof v === "bigint") return ["int", v.toString()];
  if (typeof v === "string") return ["text", v];
  if (v instanceof Date) return ["timestamp", v.toISOString()];
  if (v instanceof Uint8Array) return ["bytes", wb.b64encode(v)];
  return ["json", v];
}
function objects([columns, rows]) {
  return rows.map((r) => {
    const o = {};
    columns.forEach((c, i) => { o[c] = r[i]; });
    return o;
  });
}
function sqlCall(kind, text, params) {
  const [ok, value] = wb.sql(kind, String(text).toWellFormed(), JSON.stringify(params));
  if (!ok) throw new PlatformError(JSON.parse(value));
  return value;
}

/** Raw parameterised SQL as service_role (`db = "service"` only). */
export const sql = {
  /** Rows as objects keyed by column name. */
  async query(text, params = []) { return objects(sqlCall("query", text, params.map(param))); },
  /** The number of rows the statement affected. */
  async execute(text, params = []) { return sqlCall("execute", text, params.map(param)); },
  /** Statements `[[text, params], …]` in one transaction; the rows of each. */
  async transaction(statements) {
    const list = statements.map((s) => (Array.isArray(s) ? [String(s[0]), (s[1] || []).map(param)] : [String(s.sql), (s.params || []).map(param)]));
    return sqlCall("transaction", "", list).map(objects);
  },
};

function storageCall(op, bucket, arg, body) {
  const [ok, value] = body === undefined ? wb.storage(op, String(bucket), arg) : wb.storage(op, String(bucket), arg, body);
  return ok ? { value, error: null } : { value: null, error: JSON.parse(value) };
}
function toBytes(body) {
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  if (typeof Blob === "function" && body instanceof Blob) return body._bytes;
  return new TextEncoder().encode(String(body));
}

/** One bucket, as storage-js's `supabase.storage.from(id)`: results are
 * `{ data, error }`. Needs a `storage` grant for the bucket and mode. */
class Bucket {
  constructor(id) { this.id = id; }
  async upload(path, body, options = {}) {
    const arg = JSON.stringify({ path, contentType: options.contentType ?? (typeof Blob === "function" && body instanceof Blob && body.type ? body.type : undefined), cacheControl: options.cacheControl === undefined ? undefined : Number(options.cacheControl), upsert: !!options.upsert, metadata: options.metadata });
    const { value, error } = storageCall("upload", this.id, arg, toBytes(body));
    if (error) return { data: null, error };
    const info = JSON.parse(value);
    return { data: { id: info.id, path: info.name, fullPath: `${this.id}/${info.name}` }, error: null };
  }
  async update(path, body, options = {}) { return this.upload(path, body, { ...options, upsert: true }); }
  async download(path) {
    const { value, error } = storageCall("download", this.id, String(path));
    if (error) return { data: null, error };
    const [bytes, info] = value;
    return { data: new Blob([bytes], { type: JSON.parse(info).contentType }), error: null };
  }
  async list(prefix = "", options = {}) {
    const { value, error } = storageCall("list", this.id, JSON.stringify({ prefix, limit: options.limit, offset: options.offset, search: options.search }));
    return error ? { data: null, error } : { data: JSON.parse(value), error: null };
  }
  async remove(paths) {
    const { value, error } = storageCall("remove", this.id, JSON.stringify(paths.map(String)));
    return error ? { data: null, error } : { data: JSON.parse(value).map((name) => ({ name })), error: null };
  }
  async createSignedUrl(path, expiresIn) {
    const { value, error } = storageCall("signedUrl", this.id, JSON.stringify({ path, expiresIn }));
    return error ? { data: null, error } : { data: { signedUrl: value }, error: null };
  }
}

/** Files in storage buckets, as the function's principal. */
export const storage = { from: (bucket) => new Bucket(bucket) };

/** The caller. */
export const auth = {
  /** `{ id, role, claims }` of the signed-in user, or null for anon and keys. */
  user() {
    const [role, id, claims] = wb.authUser();
    return id ? { id, role, claims: JSON.parse(claims) } : null;
  },
  /** `{ role, userId, claims }` of whoever called, signed in or not. */
  principal() {
    const [role, userId, claims] = wb.authUser();
    return { role, userId: userId ?? null, claims: JSON.parse(claims) };
  },
};

function logAt(level) {
  return (message, fields) => wb.log(level, (fields === undefined ? String(message) : `${message} ${JSON.stringify(fields)}`).toWellFormed());
}
/** Structured logs into the invocation log. */
export const log = { debug: logAt("debug"), info: logAt("info"), warn: logAt("warn"), error: logAt("error") };

/** Environment variables granted in function.toml (`env = [...]`). */
export const env = {
  get(name) { const v = wb.env(String(name).toWellFormed()); return v === null ? undefined : v; },
};

export default { db, sql, auth, log, env, storage };
