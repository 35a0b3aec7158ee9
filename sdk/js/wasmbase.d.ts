// Types of Wasmbase JS/TS functions: the `wasmbase` module
// (sdk/js/engine/src/wasmbase.js) and what the engine adds to the web APIs
// that `"lib": ["ES2022", "DOM"]` already describes (sdk/js/engine/src/prelude.js).
// Guide: docs/FUNCTIONS.md, "JavaScript and TypeScript".
//
// Import the types below with `import type { … } from "wasmbase"`: the build
// checks every value import from "wasmbase" against function.toml, and only
// db, sql, auth, log, env and PlatformError are values.

/** The `Deno` global (for code written for Deno and Supabase Edge Functions). */
declare namespace Deno {
  /** Variables granted in function.toml (`env = [...]`); read-only. */
  const env: {
    /** The value, or undefined when the name is not granted or has no value. */
    get(name: string): string | undefined;
    has(name: string): boolean;
    /** Always throws: a function's environment is read-only. */
    set(name: string, value: string): never;
    /** An empty object in this release: read names one by one with `get`. */
    toObject(): Record<string, string>;
  };

  interface NetAddr {
    transport: "tcp";
    hostname: string;
    port: number;
  }

  /** The handler's second argument. */
  interface ServeHandlerInfo {
    /** Always `{ transport: "tcp", hostname: "", port: 0 }`. */
    remoteAddr: NetAddr;
    /** Work to finish before the response is returned. */
    waitUntil(promise: PromiseLike<unknown>): void;
    /** Does nothing. */
    passThroughOnException(): void;
  }

  type ServeHandler = (request: Request, info: ServeHandlerInfo) => Response | Promise<Response>;

  /** Accepted for compatibility and ignored: the platform routes requests. */
  interface ServeOptions {
    port?: number;
    hostname?: string;
    signal?: AbortSignal;
    onListen?: (addr: NetAddr) => void;
  }

  /** What `Deno.serve` returns; nothing listens, so none of it does anything. */
  interface HttpServer {
    /** Never settles. */
    finished: Promise<void>;
    shutdown(): Promise<void>;
    ref(): void;
    unref(): void;
    addr: NetAddr;
  }

  /** Makes `handler` the function's HTTP entry point (call it at the top level). */
  function serve(handler: ServeHandler): HttpServer;
  function serve(options: ServeOptions, handler: ServeHandler): HttpServer;
  function serve(options: ServeOptions & { handler: ServeHandler }): HttpServer;
}

declare module "wasmbase" {
  // ---- entry points (types only) -------------------------------------------

  /** Workers' `env`: the variables granted in function.toml, read on demand.
   * Augment it to name yours: `declare module "wasmbase" { interface Env { API_KEY?: string } }`. */
  export interface Env {
    readonly [name: string]: string | undefined;
  }

  /** The third argument of `fetch` and `scheduled`. */
  export interface ExecutionContext {
    /** Work to finish before the response is returned (or the run ends);
     * a rejection is logged, not thrown. */
    waitUntil(promise: PromiseLike<unknown>): void;
    /** Does nothing. */
    passThroughOnException(): void;
  }

  /** A `[[cron]]` tick, as `scheduled(event, env, ctx)` receives it. */
  export interface ScheduledEvent<P = unknown> {
    /** The `[[cron]]` entry's name (not its schedule expression). */
    cron: string;
    /** The `[[cron]]` entry's name. */
    name: string;
    /** The tick's time, milliseconds since the epoch. */
    scheduledTime: number;
    /** The tick's time, RFC 3339. */
    scheduledAt: string;
    /** The same for every attempt of one tick. */
    runId: string;
    /** 1 for the first attempt. */
    attempt: number;
    /** The entry's `payload`, parsed; null when it has none. */
    payload: P | null;
  }

  /** The shape of `export default { fetch, scheduled }`. */
  export interface ExportedHandler<E = Env> {
    fetch?(request: Request, env: E, ctx: ExecutionContext): Response | Promise<Response>;
    scheduled?(event: ScheduledEvent, env: E, ctx: ExecutionContext): void | Promise<void>;
  }

  // ---- errors ------------------------------------------------------------------

  /** A failed platform call, as the `error` of a `db` result. */
  export interface PlatformErrorShape {
    /** PostgREST's `PGRST…` code, the SQLSTATE, or `WB…`. */
    code: string;
    message: string;
    details: string | null;
    hint: string | null;
    /** The HTTP status `/rest/v1` would answer with. */
    status: number;
  }

  /** What `sql` calls throw. */
  export class PlatformError extends Error implements PlatformErrorShape {
    constructor(error: { code: string; message: string; details?: string | null; hint?: string | null; status: number });
    name: "PlatformError";
    code: string;
    details: string | null;
    hint: string | null;
    status: number;
  }

  // ---- db ----------------------------------------------------------------------

  /** What awaiting a query gives (it never throws for a database error). */
  export interface QueryResult<D> {
    data: D | null;
    error: PlatformErrorShape | null;
    /** The total with `{ count: "exact" }`, else null. */
    count: number | null;
    /** 200, 201 (insert/upsert), 204 (a write without `.select()`), or the error's. */
    status: number;
  }

  export interface RpcResult<R> {
    data: R | null;
    error: PlatformErrorShape | null;
    status: number;
  }

  /** `count` asks for the total (any value counts exactly). */
  export interface CountOption {
    count?: "exact" | "planned" | "estimated";
  }

  /** A data API request under construction; `await` runs it. Methods return
   * the same builder. Filter grammar: docs/DATA.md. */
  export interface QueryBuilder<T, D = T[]> extends PromiseLike<QueryResult<D>> {
    /** Columns to read, or after a write, to return (`insert(…).select()`). */
    select(columns?: string, options?: CountOption): this;
    insert(rows: Partial<T> | Partial<T>[], options?: CountOption): this;
    /** `onConflict`: comma-separated columns (default: the primary key). */
    upsert(rows: Partial<T> | Partial<T>[], options?: { onConflict?: string; ignoreDuplicates?: boolean }): this;
    update(patch: Partial<T>): this;
    delete(): this;

    eq(column: string, value: unknown): this;
    neq(column: string, value: unknown): this;
    gt(column: string, value: unknown): this;
    gte(column: string, value: unknown): this;
    lt(column: string, value: unknown): this;
    lte(column: string, value: unknown): this;
    like(column: string, pattern: string): this;
    ilike(column: string, pattern: string): this;
    is(column: string, value: boolean | null): this;
    in(column: string, values: readonly unknown[]): this;
    /** `cs`: an array, a JSON object, or a range literal. */
    contains(column: string, value: unknown): this;
    /** `cd` */
    containedBy(column: string, value: unknown): this;
    not(column: string, operator: string, value: unknown): this;
    /** PostgREST's `or=(…)`, without the parentheses: `"a.eq.1,b.gt.2"`. */
    or(filters: string): this;
    /** One `eq` per key. */
    match(query: Record<string, unknown>): this;
    /** Any filter, written raw: `filter("id", "in", "(1,2)")`. */
    filter(column: string, operator: string, value: unknown): this;

    order(column: string, options?: { ascending?: boolean; nullsFirst?: boolean }): this;
    limit(count: number): this;
    /** Rows `from` to `to`, both included, counted from 0. */
    range(from: number, to: number): this;

    /** Exactly one row: otherwise `error` is PGRST116 (status 406). */
    single(): QueryBuilder<T, T>;
    /** At most one row: none gives `data: null`; more is PGRST116. */
    maybeSingle(): QueryBuilder<T, T>;

    /** Runs it (what `await` does). */
    execute(): Promise<QueryResult<D>>;
  }

  export interface Db {
    /** A query on `table` of the first exposed schema; it reads unless a
     * write method is called. Rows are `T`: `db.from<Todo>("todos")`. */
    from<T = Record<string, any>>(table: string): QueryBuilder<T>;
    /** Calls a SQL function of an exposed schema. */
    rpc<R = unknown>(fn: string, args?: Record<string, unknown>): Promise<RpcResult<R>>;
    /** The same, in another exposed schema. */
    schema(schema: string): {
      from<T = Record<string, any>>(table: string): QueryBuilder<T>;
      rpc<R = unknown>(fn: string, args?: Record<string, unknown>): Promise<RpcResult<R>>;
    };
  }

  /** The data API as the function's principal. Needs `db = "caller"` (RLS
   * applies) or `db = "service"` (service_role). */
  export const db: Db;

  // ---- sql ---------------------------------------------------------------------

  /** One statement of a transaction: `[text, params]` or `{ sql, params }`. */
  export type SqlStatement = readonly [text: string, params?: readonly unknown[]] | { sql: string; params?: readonly unknown[] };

  /** Raw parameterised SQL as service_role (`db = "service"`). Each call is
   * one transaction; failures throw PlatformError. Parameters (`$1`, `$2`, …):
   * null/undefined → NULL; booleans; integers and other numbers; bigint (as a
   * number); strings; Date → timestamp; Uint8Array → bytea; anything else
   * (objects, arrays) → JSON text. */
  export const sql: {
    /** Rows as objects keyed by column name. */
    query<T = Record<string, any>>(text: string, params?: readonly unknown[]): Promise<T[]>;
    /** The number of rows the statement affected. */
    execute(text: string, params?: readonly unknown[]): Promise<number>;
    /** All statements in one transaction; the rows of each. */
    transaction(statements: readonly SqlStatement[]): Promise<Record<string, any>[][]>;
  };

  // ---- auth, log, env ------------------------------------------------------

  export interface User {
    /** The token's `sub`. */
    id: string;
    /** "authenticated", or "service_role" for a service token with a `sub`. */
    role: string;
    claims: Record<string, unknown>;
  }

  export interface Principal {
    /** "anon" | "authenticated" | "service_role" */
    role: string;
    userId: string | null;
    claims: Record<string, unknown>;
  }

  /** The caller (no grant needed). */
  export const auth: {
    /** The signed-in user, or null for anon and API keys. */
    user(): User | null;
    /** Whoever called, signed in or not. */
    principal(): Principal;
  };

  /** Lines in the invocation log; `fields` are appended to the message as JSON. */
  export const log: {
    debug(message: unknown, fields?: Record<string, unknown>): void;
    info(message: unknown, fields?: Record<string, unknown>): void;
    warn(message: unknown, fields?: Record<string, unknown>): void;
    error(message: unknown, fields?: Record<string, unknown>): void;
  };

  /** Variables granted in function.toml (`env = [...]`). */
  export const env: {
    get(name: string): string | undefined;
  };

  /** storage-js's `FileOptions`. */
  export interface FileOptions {
    /** MIME type (default `application/octet-stream`, or the Blob's type). */
    contentType?: string;
    /** Seconds clients may cache it. */
    cacheControl?: string | number;
    /** Replace an object of the same name. */
    upsert?: boolean;
    /** Kept with the object. */
    metadata?: Record<string, unknown>;
  }

  /** One entry of `list` (storage-js's `FileObject`); folders have `id: null`. */
  export interface FileObject {
    name: string;
    id: string | null;
    updated_at: string | null;
    created_at: string | null;
    last_accessed_at: string | null;
    metadata: Record<string, unknown> | null;
  }

  /** `{ data, error }` as storage-js answers. */
  export type StorageResult<D> = { data: D; error: null } | { data: null; error: PlatformErrorShape };

  /** One bucket (needs a `storage` grant for it and the mode). */
  export interface Bucket {
    upload(path: string, body: string | ArrayBuffer | ArrayBufferView | Blob, options?: FileOptions): Promise<StorageResult<{ id: string; path: string; fullPath: string }>>;
    update(path: string, body: string | ArrayBuffer | ArrayBufferView | Blob, options?: FileOptions): Promise<StorageResult<{ id: string; path: string; fullPath: string }>>;
    download(path: string): Promise<StorageResult<Blob>>;
    list(prefix?: string, options?: { limit?: number; offset?: number; search?: string }): Promise<StorageResult<FileObject[]>>;
    remove(paths: string[]): Promise<StorageResult<{ name: string }[]>>;
    createSignedUrl(path: string, expiresIn: number): Promise<StorageResult<{ signedUrl: string }>>;
  }

  /** Files in storage buckets, as the function's principal (`storage = [...]`). */
  export const storage: { from(bucket: string): Bucket };

  const wasmbase: { db: Db; sql: typeof sql; auth: typeof auth; log: typeof log; env: typeof env; storage: typeof storage };
  export default wasmbase;
}
