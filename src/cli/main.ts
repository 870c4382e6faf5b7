/**
 * The `clonekv` command line. The only module that reads argv, prints or exits.
 *
 * Exit codes: 0 success; 1 the forwarder could not be reached or refused the operation;
 * 2 bad usage; 3 key not found (`get`); 4 a conditional write lost (`--if-version`).
 *
 * @module
 */
import { readFile } from 'node:fs/promises';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ClonekvError, ErrorCode } from '../errors.ts';
import { Forwarder } from '../forwarder/forwarder.ts';
import { Peer } from '../peer/peer.ts';
import { PRESENCE_PREFIX } from '../protocol/commands.ts';
import type { ForwarderOptions, WatchEntry } from '../types.ts';

/** Exit codes, documented in the README. */
export const Exit = { Ok: 0, Failed: 1, Usage: 2, NotFound: 3, Conflict: 4 } as const;

const DEFAULT_SERVER = 'tcp://127.0.0.1:5556';

class UsageError extends Error {}

/**
 * Writers need no snapshot: they hold a subtree no key uses and rely on the forwarder's
 * acknowledgements (a plain CHP server gives none, so its writes must go through the library).
 */
const WRITE_ONLY_SUBTREE = '\u0000clonekv-writer';

const HELP: Record<string, string> = {
  main: `clonekv: a distributed key-value cache over ZeroMQ (Clustered Hashmap Protocol)

Usage: clonekv <command> [options]

Commands:
  serve                 run a forwarder (the server)
  get KEY               print a key's value
  set KEY VALUE         write a value; exits 0 once the forwarder has sequenced it
  del KEY               delete a key
  dump [PREFIX]         print every key under PREFIX
  load FILE             write every key of a JSON object file (with progress)
  watch [PREFIX]        print changes under PREFIX as they happen
  peers                 list the live peers (presence)
  stats                 print the forwarder's counters

Common options:
  --server tcp://HOST:PORT   the forwarder (env CLONEKV_SERVER; default ${DEFAULT_SERVER})
  --timeout MS               give up after MS milliseconds (default 5000)
  --help                     help for a command: clonekv <command> --help

Exit codes: 0 ok, 1 forwarder unreachable or refused, 2 bad usage, 3 key not found,
4 conditional write lost.`,
  serve: `Usage: clonekv serve [--port P] [--bind ADDRESS] [--heartbeat MS] [--max-value-bytes N]

Runs a forwarder: ROUTER on P (snapshots, acknowledged writes), PUB on P+1 (updates),
SUB on P+2 (writes from plain CHP peers). Stops cleanly on Ctrl-C or SIGTERM.
  --port P              base port (default 5556; 0 picks a free triple)
  --bind ADDRESS        address to bind (default 127.0.0.1; 0.0.0.0 for every interface)
  --heartbeat MS        heartbeat interval (default 1000)
  --max-value-bytes N   largest accepted value (default 1048576)`,
  get: `Usage: clonekv get KEY [--json] [--server URL]

Prints the value of KEY (strings as they are, other values as JSON; --json: always JSON).
Exits 3 if the key does not exist.`,
  set: `Usage: clonekv set KEY VALUE [--ttl SECONDS] [--json] [--if-version N] [--server URL]

Writes VALUE (a string; with --json, VALUE is parsed as JSON) and prints the sequence the
forwarder assigned. Exits 0 only once the write is sequenced.
  --ttl SECONDS     the forwarder deletes the key after this time
  --if-version N    write only if the key's version is N (0 = only if absent); exits 4 otherwise`,
  del: `Usage: clonekv del KEY [--if-version N] [--server URL]

Deletes KEY and prints the sequence of the delete.`,
  dump: `Usage: clonekv dump [PREFIX] [--json] [--server URL]

Prints every key under PREFIX: "key<TAB>value" lines (a value holding a tab or newline is
JSON-quoted), or with --json one JSON object { key: value }. Shows progress on stderr for large snapshots.`,
  load: `Usage: clonekv load FILE [--prefix PREFIX] [--server URL]

Writes every key of FILE, a JSON object { key: value } (nested objects are written as
values, not flattened), each under PREFIX + key. Shows progress on stderr; exits 0 once all
writes are sequenced.`,
  watch: `Usage: clonekv watch [PREFIX] [--json] [--updates-only] [--server URL]

Prints the current entries under PREFIX, then every change, until Ctrl-C:
"put key value" / "del key (reason)" lines, or JSON lines with --json.`,
  stats: `Usage: clonekv stats [--json] [--server URL]

Prints the forwarder's counters: sequence, keys, live peers, published, duplicates, conflicts,
rejected, malformed (by reason), expired, purged, dropped, snapshots served.`,
  peers: `Usage: clonekv peers [--json] [--server URL]

Lists the live clonekv peers (the forwarder's presence table under $peers/):
"id<TAB>name<TAB>subtree<TAB>since" lines, or a JSON array with --json.`,
};

interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
  progress: boolean;
}

/** Runs the CLI with `argv` (without `node` and the script) and returns the exit code. */
export async function run(argv: string[], io: Io): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
      io.out(HELP.main!);
      return command === undefined ? Exit.Usage : Exit.Ok;
    }
    if (!(command in HELP) || command === 'main') throw new UsageError(`unknown command "${command}"; try clonekv --help`);
    if (rest.includes('--help') || rest.includes('-h')) {
      io.out(HELP[command]!);
      return Exit.Ok;
    }
    switch (command) {
      case 'serve':
        return await serve(rest, io);
      case 'get':
        return await get(rest, io);
      case 'set':
        return await write(rest, io, 'set');
      case 'del':
        return await write(rest, io, 'del');
      case 'dump':
        return await dump(rest, io);
      case 'load':
        return await load(rest, io);
      case 'watch':
        return await watch(rest, io);
      case 'stats':
        return await stats(rest, io);
      case 'peers':
        return await peers(rest, io);
    }
    return Exit.Usage;
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`clonekv: ${err.message}`);
      return Exit.Usage;
    }
    if (err instanceof ClonekvError) {
      io.err(`clonekv: ${err.message}`);
      if (err.code === ErrorCode.Conflict) return Exit.Conflict;
      if (err.code === ErrorCode.InvalidOption || err.code === ErrorCode.InvalidKey || err.code === ErrorCode.InvalidValue) return Exit.Usage;
      return Exit.Failed;
    }
    if ((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.err(`clonekv: ${(err as Error).message}; try clonekv ${command} --help`);
      return Exit.Usage;
    }
    io.err(`clonekv: unexpected error: ${(err as Error)?.stack ?? String(err)}`);
    return Exit.Failed;
  }
}

const COMMON = {
  server: { type: 'string' },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
} as const satisfies ParseArgsConfig['options'];

function parse<O extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: O, positionals: [min: number, max: number]) {
  const parsed = parseArgs({ args, options: { ...COMMON, ...options }, allowPositionals: true, strict: true });
  const n = parsed.positionals.length;
  if (n < positionals[0]) throw new UsageError(`missing argument; try --help`);
  if (n > positionals[1]) throw new UsageError(`unexpected argument "${parsed.positionals[positionals[1]]}"; try --help`);
  return parsed;
}

function intArg(name: string, value: string | undefined, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} expects a whole number ≥ ${min}, got "${value}"`);
  return n;
}

function server(values: { server?: string | undefined }): string {
  return values.server ?? process.env.CLONEKV_SERVER ?? DEFAULT_SERVER;
}

/** Opens a peer and waits for its snapshot, with a clear error if the forwarder is not there. */
async function joinedPeer(url: string, subtree: string, timeoutMs: number, io: Io): Promise<Peer> {
  const peer = new Peer({ server: url, subtree, name: 'clonekv-cli', writeTimeout: timeoutMs, presence: false });
  if (io.progress) peer.on('progress', ({ received }) => io.err(`receiving snapshot: ${received} keys…`));
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      peer.ready(),
      new Promise((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new ClonekvError(
                ErrorCode.Timeout,
                `no snapshot from the forwarder at ${url} within ${timeoutMs} ms; is \`clonekv serve\` running there? ` +
                  'Set --server or CLONEKV_SERVER, or raise --timeout',
              ),
            ),
          timeoutMs,
        );
      }),
    ]);
  } catch (err) {
    await peer.close();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return peer;
}

function formatValue(value: unknown, json: boolean): string {
  if (value instanceof Uint8Array) {
    return json ? JSON.stringify({ base64: Buffer.from(value).toString('base64') }) : Buffer.from(value).toString('utf8');
  }
  if (!json && typeof value === 'string') return value;
  return JSON.stringify(value, (_k, v: unknown) => (v instanceof Uint8Array ? { base64: Buffer.from(v).toString('base64') } : v));
}

async function serve(args: string[], io: Io): Promise<number> {
  const { values } = parse(
    args,
    { port: { type: 'string' }, bind: { type: 'string' }, heartbeat: { type: 'string' }, 'max-value-bytes': { type: 'string' } },
    [0, 0],
  );
  const options: ForwarderOptions = { port: intArg('port', values.port, 5556) };
  if (values.bind !== undefined) options.bind = values.bind;
  if (values.heartbeat !== undefined) options.heartbeatInterval = intArg('heartbeat', values.heartbeat, 1000, 10);
  if (values['max-value-bytes'] !== undefined) options.maxValueBytes = intArg('max-value-bytes', values['max-value-bytes'], 0, 1);
  const fwd = await Forwarder.start(options);
  const e = fwd.endpoints;
  if (values.json) {
    io.out(JSON.stringify({ endpoint: fwd.endpoint, ...e, epoch: fwd.epoch, pid: process.pid }));
  } else {
    io.out(`clonekv forwarder listening on ${fwd.endpoint} (epoch ${fwd.epoch})`);
    io.out(`  snapshots and writes: ${e.snapshot}\n  updates:              ${e.publisher}\n  plain CHP writes:     ${e.collector}`);
    io.out(`peers connect with --server ${fwd.endpoint} (or CLONEKV_SERVER=${fwd.endpoint}); Ctrl-C stops`);
  }
  await new Promise<void>((resolve) => {
    const stop = (): void => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await fwd.close();
  return Exit.Ok;
}

async function get(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(args, {}, [1, 1]);
  const key = positionals[0]!;
  const url = server(values);
  const peer = await joinedPeer(url, key, intArg('timeout', values.timeout, 5000, 1), io);
  try {
    if (!peer.has(key)) {
      io.err(`clonekv: key "${key}" not found at ${url}`);
      return Exit.NotFound;
    }
    io.out(formatValue(peer.get(key), values.json === true));
    return Exit.Ok;
  } finally {
    await peer.close();
  }
}

async function write(args: string[], io: Io, op: 'set' | 'del'): Promise<number> {
  const { values, positionals } = parse(args, { ttl: { type: 'string' }, 'if-version': { type: 'string' } }, op === 'set' ? [2, 2] : [1, 1]);
  const key = positionals[0]!;
  const timeout = intArg('timeout', values.timeout, 5000, 1);
  const url = server(values);
  let value: unknown;
  if (op === 'set') {
    const raw = positionals[1]!;
    if (values.json) {
      try {
        value = JSON.parse(raw);
      } catch (err) {
        throw new UsageError(`VALUE for "${key}" is not valid JSON (${(err as Error).message}); drop --json to store it as a string`);
      }
    } else {
      value = raw;
    }
  }
  let ttl: number | undefined;
  if (values.ttl !== undefined) {
    ttl = Number(values.ttl);
    if (!Number.isFinite(ttl) || ttl <= 0) throw new UsageError(`--ttl expects a positive number of seconds, got "${values.ttl}"`);
  }
  const ifVersion = values['if-version'] === undefined ? undefined : intArg('if-version', values['if-version'], 0);
  const peer = new Peer({ server: url, subtree: WRITE_ONLY_SUBTREE, name: 'clonekv-cli', writeTimeout: timeout, presence: false });
  try {
    const seq =
      op === 'set'
        ? await peer.set(key, value, { ...(ttl !== undefined ? { ttl } : {}), ...(ifVersion !== undefined ? { ifVersion } : {}) })
        : await peer.delete(key, ifVersion !== undefined ? { ifVersion } : {});
    io.out(String(seq));
    return Exit.Ok;
  } finally {
    await peer.close();
  }
}

async function dump(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(args, {}, [0, 1]);
  const prefix = positionals[0] ?? '';
  const peer = await joinedPeer(server(values), prefix, intArg('timeout', values.timeout, 30_000, 1), io);
  try {
    if (values.json) {
      const obj: Record<string, unknown> = {};
      for (const e of peer.entries(prefix)) obj[e.key] = e.value;
      io.out(JSON.stringify(obj, (_k, v: unknown) => (v instanceof Uint8Array ? { base64: Buffer.from(v).toString('base64') } : v)));
    } else {
      for (const e of peer.entries(prefix)) {
        const text = formatValue(e.value, false);
        // A value with a tab or newline would break the line format: print it JSON-quoted.
        io.out(`${e.key}\t${/[\t\n\r]/.test(text) ? JSON.stringify(text) : text}`);
      }
    }
    return Exit.Ok;
  } finally {
    await peer.close();
  }
}

async function load(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(args, { prefix: { type: 'string' } }, [1, 1]);
  const file = positionals[0]!;
  let data: unknown;
  try {
    data = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new UsageError(`cannot read ${file} as JSON: ${(err as Error).message}`);
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) throw new UsageError(`${file} must hold a JSON object { key: value }`);
  const prefix = values.prefix ?? '';
  const entries = Object.entries(data as Record<string, unknown>);
  // Check every key first: a bad one found half-way would leave the load half done.
  for (const [k] of entries) {
    const bytes = Buffer.byteLength(prefix + k);
    if (bytes === 0 || bytes > 255) throw new UsageError(`${file}: key ${JSON.stringify(prefix + k)} must be 1 to 255 bytes; nothing was written`);
  }
  const url = server(values);
  const peer = new Peer({ server: url, subtree: WRITE_ONLY_SUBTREE, name: 'clonekv-cli', writeTimeout: intArg('timeout', values.timeout, 30_000, 1), presence: false });
  try {
    const window = 256;
    let done = 0;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < entries.length) {
        const [k, v] = entries[next++]!;
        await peer.set(prefix + k, v);
        done++;
        if (io.progress && done % 10_000 === 0) io.err(`loaded ${done} of ${entries.length} keys…`);
      }
    };
    await Promise.all(Array.from({ length: Math.min(window, entries.length) }, worker));
    io.out(`loaded ${done} keys into ${url}`);
    return Exit.Ok;
  } finally {
    await peer.close();
  }
}

async function watch(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(args, { 'updates-only': { type: 'boolean' } }, [0, 1]);
  const prefix = positionals[0] ?? '';
  const peer = await joinedPeer(server(values), prefix, intArg('timeout', values.timeout, 30_000, 1), io);
  const ac = new AbortController();
  const stop = (): void => ac.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    for await (const e of peer.watch(prefix, { signal: ac.signal, updatesOnly: values['updates-only'] === true })) {
      io.out(formatWatch(e, values.json === true));
    }
    return Exit.Ok;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    await peer.close();
  }
}

function formatWatch(e: WatchEntry, json: boolean): string {
  if (json) {
    return formatValue({ key: e.key, op: e.operation, value: e.value, version: e.version, isUpdate: e.isUpdate, ...(e.reason ? { reason: e.reason } : {}) }, true);
  }
  return e.operation === 'put' ? `put ${e.key} ${formatValue(e.value, false)}` : `del ${e.key} (${e.reason ?? 'deleted'})`;
}

async function stats(args: string[], io: Io): Promise<number> {
  const { values } = parse(args, {}, [0, 0]);
  const url = server(values);
  const timeout = intArg('timeout', values.timeout, 5000, 1);
  const peer = await joinedPeer(url, WRITE_ONLY_SUBTREE, timeout, io);
  try {
    const { peerList: _peers, ...s } = await peer.serverStats(timeout);
    if (values.json) {
      io.out(JSON.stringify({ server: url, ...s }));
    } else {
      io.out(`server ${url}`);
      for (const [k, v] of Object.entries(s)) io.out(`${k} ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`);
    }
    return Exit.Ok;
  } finally {
    await peer.close();
  }
}

async function peers(args: string[], io: Io): Promise<number> {
  const { values } = parse(args, {}, [0, 0]);
  const peer = await joinedPeer(server(values), PRESENCE_PREFIX, intArg('timeout', values.timeout, 5000, 1), io);
  try {
    const list = [...peer.entries<{ id: string; name: string; subtree: string; since: string }>(PRESENCE_PREFIX)]
      .map((e) => e.value)
      .filter((v) => v.id !== peer.id);
    if (values.json) io.out(JSON.stringify(list));
    else for (const v of list) io.out(`${v.id}\t${v.name}\t${v.subtree === '' ? '(all)' : v.subtree}\t${v.since}`);
    return Exit.Ok;
  } finally {
    await peer.close();
  }
}

/** Entry point used by bin/clonekv.js. */
export async function main(): Promise<void> {
  const code = await run(process.argv.slice(2), {
    out: (s) => process.stdout.write(s + '\n'),
    err: (s) => process.stderr.write(s + '\n'),
    progress: process.stderr.isTTY === true || process.env.CLONEKV_PROGRESS === '1',
  });
  process.exitCode = code;
}
