/**
 * The `clonekv` command line. The only module that reads argv, prints or exits.
 *
 * Exit codes: 0 success (also when the reader of stdout went away: `clonekv dump | head`);
 * 1 the forwarder could not be reached or refused the operation; 2 bad usage; 3 key not found
 * (`get`); 4 a conditional write lost (`--if-version`).
 *
 * Every error is printed as one line naming what failed, the forwarder and what to do next;
 * only a bug in clonekv itself prints a stack trace, and says so.
 *
 * @module
 */
import { readFileSync, watch as watchFs } from 'node:fs';
import { basename, dirname, resolve as resolvePath } from 'node:path';
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { ClonekvError, ErrorCode, Forwarder, generateIdentity, Peer, saveIdentity, type ForwarderOptions, type FailoverReason, type ResyncReason, type WatchEntry } from '../index.ts';
import { OPTION_BOUNDS } from '../forwarder/settings.ts';
import { MAX_DURATION_MS, MAX_TTL_SECONDS } from '../options.ts';
import { MAX_KEY_BYTES, PRESENCE_PREFIX } from '../protocol/commands.ts';
import { askServerStats } from '../peer/server-stats.ts';
import { MAX_SERVERS } from '../peer/servers.ts';
import type { PeerOptions, ServerStats } from '../types.ts';
import { clientCurveArgs as curveArgs, CurveUsageError, keygenCurve, sealedArgs } from './curve-args.ts';

/** Exit codes, documented in the README. */
export const Exit = { Ok: 0, Failed: 1, Usage: 2, NotFound: 3, Conflict: 4 } as const;

const DEFAULT_SERVER = 'tcp://127.0.0.1:5556';

/** The largest value the forwarder can be configured to take (its `maxValueBytes` bound). */
const MAX_VALUE_BYTES = 256 * 1024 * 1024;

class UsageError extends Error {}

/** What a client's peer is given for CURVE and sealed subtrees. */
type Security = Pick<PeerOptions, 'curve' | 'sealed'>;

/** The --sealed flag (or CLONEKV_SEALED), a usage problem reported as one. */
function sealedArgsOrUsage(flag: string | undefined): PeerOptions['sealed'] {
  try {
    return sealedArgs(flag);
  } catch (err) {
    throw err instanceof CurveUsageError ? new UsageError(err.message) : err;
  }
}

/** The peer's CURVE flags, a usage problem reported as one. */
function clientCurveArgs(values: Parameters<typeof curveArgs>[0]): PeerOptions['curve'] {
  try {
    return curveArgs(values);
  } catch (err) {
    throw err instanceof CurveUsageError ? new UsageError(err.message) : err;
  }
}

/** `clonekv keygen --curve`: a z85 CURVE keypair. */
function keygenCurveCommand(args: string[], io: Io): number {
  // Parsed here, not by parse(): --curve is a bare switch for keygen but takes a file for serve.
  let values: { curve?: boolean; out?: string };
  try {
    values = parseArgs({ args, options: { curve: { type: 'boolean' }, out: { type: 'string' } }, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new UsageError(`${oneLine((err as Error).message)}; try clonekv keygen --help`);
  }
  if (values.curve !== true) throw new UsageError('keygen needs --curve (a CURVE keypair for serve --curve and --curve-key)');
  try {
    for (const line of keygenCurve(values.out)) io.out(line);
  } catch (err) {
    throw err instanceof CurveUsageError ? new UsageError(err.message) : err;
  }
  return Exit.Ok;
}

/**
 * Writers need no snapshot: they hold a subtree no key uses and rely on the forwarder's
 * acknowledgements (a plain CHP server gives none, so its writes must go through the library).
 */
const WRITE_ONLY_SUBTREE = '\u0000clonekv-writer';

/** Every flag of every command, with its type; {@link TAKES} says which command takes which. */
const FLAGS = {
  server: { type: 'string' },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
  ttl: { type: 'string' },
  'if-version': { type: 'string' },
  file: { type: 'string' },
  prefix: { type: 'string' },
  'updates-only': { type: 'boolean' },
  port: { type: 'string' },
  bind: { type: 'string' },
  heartbeat: { type: 'string' },
  'max-value-bytes': { type: 'string' },
  limit: { type: 'string' },
  since: { type: 'string' },
  data: { type: 'string' },
  memory: { type: 'boolean' },
  durability: { type: 'string' },
  'history-max': { type: 'string' },
  'history-bytes': { type: 'string' },
  'dedup-ttl': { type: 'string' },
  'dedup-max': { type: 'string' },
  'no-check-values': { type: 'boolean' },
  primary: { type: 'boolean' },
  backup: { type: 'boolean' },
  partner: { type: 'string' },
  'state-port': { type: 'string' },
  'partner-timeout': { type: 'string' },
  identity: { type: 'string' },
  policy: { type: 'string' },
  'confirm-by': { type: 'string' },
  curve: { type: 'string' },
  'curve-key': { type: 'string' },
  'curve-server-key': { type: 'string' },
  'curve-allow': { type: 'string' },
  sealed: { type: 'string' },
  out: { type: 'string' },
} as const;
type Flag = keyof typeof FLAGS;

const CLIENT = ['server', 'timeout', 'curve-server-key', 'curve-key', 'sealed'] as const satisfies readonly Flag[];

/** Where `clonekv serve` keeps its data unless told otherwise (relative to the working directory). */
const DEFAULT_DATA_DIR = './clonekv-data';
/** Where `clonekv keygen` writes the secret key unless told otherwise. */
const DEFAULT_IDENTITY_FILE = './clonekv-identity.json';

/** The flags each command takes; any other flag is refused, naming it. */
const TAKES = {
  serve: [
    'port',
    'bind',
    'heartbeat',
    'max-value-bytes',
    'json',
    'data',
    'memory',
    'durability',
    'history-max',
    'history-bytes',
    'dedup-ttl',
    'dedup-max',
    'no-check-values',
    'primary',
    'backup',
    'partner',
    'state-port',
    'partner-timeout',
    'policy',
    'curve',
    'curve-allow',
  ],
  get: [...CLIENT, 'json'],
  set: [...CLIENT, 'json', 'ttl', 'if-version', 'file', 'identity', 'policy', 'confirm-by'],
  del: [...CLIENT, 'if-version', 'identity'],
  dump: [...CLIENT, 'json'],
  load: [...CLIENT, 'prefix', 'identity'],
  watch: [...CLIENT, 'json', 'updates-only', 'since'],
  history: [...CLIENT, 'json', 'limit'],
  stats: [...CLIENT, 'json'],
  peers: [...CLIENT, 'json'],
  keygen: ['out', 'json'],
} as const satisfies Record<string, readonly Flag[]>;
type Command = keyof typeof TAKES;

const CLIENT_HELP = `  --server tcp://HOST:PORT   the forwarder (env CLONEKV_SERVER; default ${DEFAULT_SERVER}); for a
                             failover pair, both, separated by a comma: tcp://a:5556,tcp://b:5566
  --curve-server-key KEY     the forwarder's CURVE public key, if it runs with --curve (env
                             CLONEKV_CURVE_SERVER_KEY)
  --curve-key FILE           this client's CURVE key file (clonekv keygen --curve --out FILE;
                             env CLONEKV_CURVE_KEY); needed when the forwarder has --curve-allow
  --sealed PREFIX=FILE       values under PREFIX are sealed with the 32-byte secret in FILE
                             (base64; head -c 32 /dev/urandom | base64 > FILE); several:
                             comma-separated (env CLONEKV_SEALED)`;

const HELP: Record<Command | 'main', string> = {
  main: `clonekv: a distributed key-value cache over ZeroMQ (Clustered Hashmap Protocol)

Usage: clonekv <command> [options]

Commands:
  serve                 run a forwarder (the server)
  get KEY               print a key's value
  set KEY VALUE         write a value (VALUE "-" reads stdin; --file F reads a file);
                        exits 0 once the forwarder has sequenced it
  del KEY               delete a key
  dump [PREFIX]         print every key under PREFIX
  load FILE             write every key of a JSON object file (with progress)
  watch [PREFIX]        print changes under PREFIX as they happen (--since N: from sequence N)
  history KEY           print the retained versions of KEY, newest first
  peers                 list the live peers (presence)
  stats                 print the forwarder's counters
  keygen                create an Ed25519 identity for signed writes (--out FILE)
  keygen --curve        create a CURVE keypair (serve --curve, --curve-key, --curve-allow)

Common options:
${CLIENT_HELP}
  --timeout MS               give up after MS milliseconds (default 5000; 30000 for dump,
                             load and watch; at most ${MAX_DURATION_MS})
  --help                     help for a command: clonekv <command> --help
  --version                  print the version of clonekv

Environment:
  CLONEKV_SERVER      the forwarder, when --server is not given (several: comma-separated)
  CLONEKV_PROGRESS=1  progress lines on stderr (dump, load) even when it is not a terminal

An argument that starts with "-" goes after "--": clonekv set KEY -- -5

Exit codes: 0 ok, 1 forwarder unreachable or refused, 2 bad usage, 3 key not found,
4 conditional write lost. A closed output (clonekv dump | head) ends quietly with 0.`,
  serve: `Usage: clonekv serve [--data DIR | --memory] [--durability sync|async] [--port P] [--bind ADDRESS]
                    [--heartbeat MS] [--max-value-bytes N] [--history-max N] [--history-bytes N]
                    [--dedup-ttl MS] [--dedup-max N] [--no-check-values] [--json]
                    [--primary | --backup --partner tcp://HOST:PORT [--state-port N] [--partner-timeout MS]]
                    [--curve SERVER_KEY_FILE [--curve-allow FILE]]

Runs a forwarder: ROUTER on P (snapshots, acknowledged writes), PUB on P+1 (updates),
SUB on P+2 (writes from plain CHP peers). Stops cleanly on Ctrl-C or SIGTERM.
  --data DIR            keep the data in DIR (default ${DEFAULT_DATA_DIR}, created on first
                        start): a restart recovers the map, the sequence and the epoch
  --memory              keep nothing on disk: a restart starts empty, with a new epoch
  --durability MODE     sync (default): a write is acknowledged once on disk; async:
                        acknowledged first, on disk within milliseconds (a crash may lose them)
  --port P              base port (default 5556; 0 picks a free triple; at most 65533)
  --bind ADDRESS        address to bind (default 127.0.0.1; 0.0.0.0 for every interface)
  --heartbeat MS        heartbeat interval (default 1000; 10 to ${MAX_DURATION_MS}); peers
                        resync after 3000 ms without one, so keep it well under that
  --max-value-bytes N   largest accepted value (default 1048576; at most ${MAX_VALUE_BYTES})
  --history-max N       most updates kept in the retained history, from which peers catch up
                        by difference and history/watch --since read (default 1000000)
  --history-bytes N     most bytes the retained history holds (default 268435456; at least
                        ${OPTION_BOUNDS.historyBytes[0]})
  --dedup-ttl MS        how long a write's outcome is remembered, so a retry is not applied
                        twice (default 60000; at most ${OPTION_BOUNDS.dedupTtl[1]})
  --dedup-max N         most write outcomes remembered at once (default 500000)
  --no-check-values     do not refuse values marked enc=msgpack that do not decode
  --json                print the endpoints as one JSON line
  --primary, --backup   run as a member of a primary/backup pair (default ports: primary 5556
                        and state 5003, backup 5566 and state 5004); role changes on stderr
  --partner tcp://HOST:PORT  the partner's state endpoint (required with --primary/--backup)
  --state-port N        the state port this member binds (0 picks a free one)
  --partner-timeout MS  partner silence after which it is taken as gone (default 2000)
  --policy FILE         write policy (YAML or JSON: which identities may write which
                        prefixes); every write must then be signed (--identity). SIGHUP or
                        a change to the file reloads it; a bad file on reload keeps the old
                        policy (said on stderr)
  --curve FILE          encrypt all three ports with CURVE, with the server keypair in FILE
                        (clonekv keygen --curve --out FILE); peers then need its public key
                        (--curve-server-key). Give both members of a pair the same FILE:
                        their state port is then CURVE too, admitting only that key.
  --curve-allow FILE    admit only the client public keys listed in FILE (one a line, # for
                        comments); without it any client that knows the server key connects`,
  keygen: `Usage: clonekv keygen [--out FILE] [--json]
       clonekv keygen --curve [--out FILE]

Without --curve: creates an Ed25519 identity for signed writes. The secret key goes to FILE
(default ./clonekv-identity.json), created with mode 0600 and never overwritten; the public key
is printed (ed25519:<base64url>): put it in the forwarder's and peers' policy file.
  --out FILE   where to write the secret key
  --json       print {"publicKey": …, "file": …} as one JSON line

With --curve: creates a CURVE keypair (z85) and prints the public key. With --out, the keypair
is written to FILE (mode 0600; an existing file is never overwritten), the file that serve
--curve and --curve-key read; without it, the key file's JSON is printed after the public key.`,
  get: `Usage: clonekv get KEY [--json] [--server URL] [--timeout MS]

Prints the value of KEY (strings as they are, other values as JSON; --json: always JSON).
Exits 3 if the key does not exist.
${CLIENT_HELP}`,
  set: `Usage: clonekv set KEY VALUE [--ttl SECONDS] [--json] [--if-version N] [--server URL] [--timeout MS]
       clonekv set KEY - [options]          (the value is read from stdin)
       clonekv set KEY --file FILE [options] (the value is read from FILE)

Writes VALUE (a string; with --json, VALUE is parsed as JSON) and prints the sequence the
forwarder assigned. Exits 0 only once the write is sequenced. A value read from stdin or a
file is taken exactly as it is (a trailing newline included) and must be UTF-8 text; it may be
as large as the forwarder takes (clonekv serve --max-value-bytes, default 1 MiB).
  --ttl SECONDS     the forwarder deletes the key after this time (at most ${MAX_TTL_SECONDS}, one year)
  --if-version N    write only if the key's version is N (0 = only if absent); exits 4 otherwise
  --file FILE       read the value from FILE
  --identity FILE   sign the write with this identity (clonekv keygen); needed by a
                    forwarder run with --policy (exits 1 with CLONEKV_UNAUTHORIZED if refused)
  --confirm-by NAMES  wait for a signed receipt from each of these identities (names in
                    --policy, separated by commas) saying it applied this write; exits 1
                    with CLONEKV_UNCONFIRMED naming those that did not confirm within
                    --timeout (which then bounds the whole wait). Needs --identity and --policy
  --policy FILE     the policy that names the recipients and their keys
${CLIENT_HELP}`,
  del: `Usage: clonekv del KEY [--if-version N] [--identity FILE] [--server URL] [--timeout MS]

Deletes KEY and prints the sequence of the delete.
  --identity FILE   sign the delete with this identity (clonekv keygen)
${CLIENT_HELP}`,
  dump: `Usage: clonekv dump [PREFIX] [--json] [--server URL] [--timeout MS]

Prints every key under PREFIX: "key<TAB>value" lines (a key or value holding a control
character such as a tab or newline, or starting with ", is JSON-quoted), or with --json one
JSON object { key: value }. Shows progress on stderr for large snapshots (CLONEKV_PROGRESS=1
when stderr is not a terminal).
${CLIENT_HELP}`,
  load: `Usage: clonekv load FILE [--prefix PREFIX] [--server URL] [--timeout MS]

Writes every key of FILE, a JSON object { key: value } (nested objects are written as
values, not flattened), each under PREFIX + key. Shows progress on stderr (CLONEKV_PROGRESS=1
when stderr is not a terminal); exits 0 once all writes are sequenced.
${CLIENT_HELP}`,
  watch: `Usage: clonekv watch [PREFIX] [--json] [--updates-only | --since N] [--server URL] [--timeout MS]

Prints the current entries under PREFIX, then every change, until Ctrl-C:
"put key value" / "del key (reason)" lines (quoted as dump quotes them; a key holding a space
is quoted too), or JSON lines with --json. When the forwarder goes silent (or restarts, or
updates were missed) it says so on stderr and keeps the last known state; it says so again
when it is back in sync.
  --updates-only    skip the current entries; print only changes
  --since N         instead of the current entries, print every change after sequence N that
                    the forwarder still holds in its history, then go on live; exits 1 naming
                    the oldest sequence held if that history was compacted away
${CLIENT_HELP}`,
  history: `Usage: clonekv history KEY [--limit N] [--json] [--server URL] [--timeout MS]

Prints the versions of KEY the forwarder still holds in its retained history, newest first:
"VERSION put VALUE" / "VERSION del (reason)" lines, or one JSON array with --json. Exits 1
naming the oldest sequence held if the key exists but all of its versions were compacted away.
  --limit N         at most N versions (default 100; 1 to 10000)
${CLIENT_HELP}`,
  stats: `Usage: clonekv stats [--json] [--server URL[,URL…]] [--timeout MS]

Prints the forwarder's counters: its role (standalone, or active/passive in a pair, with the
term and the replication state and lag), sequence, keys, live peers, published, duplicates,
conflicts, rejected, malformed (by reason), expired, purged, dropped, snapshots served. Each
server of a list is asked directly (a passive one too), one block (or JSON line) each; exits 1
if one of them does not answer.
${CLIENT_HELP}`,
  peers: `Usage: clonekv peers [--json] [--server URL[,URL…]] [--timeout MS]

Lists the live clonekv peers (the forwarder's presence table under $peers/):
"id<TAB>name<TAB>subtree<TAB>since" lines, or a JSON array with --json. Given several servers
(a pair), first one "server URL<TAB>role<TAB>replication" line per server (its role, term and
replication lag, asked directly), then the peers of the active one; with --json one object
{ servers, peers }.
${CLIENT_HELP}`,
};

/** Where the CLI reads and writes; tests pass their own. */
export interface Io {
  /** Prints a line on stdout; returns false once stdout is gone (its reader closed it). */
  out: (s: string) => unknown;
  /** Prints a line on stderr. */
  err: (s: string) => void;
  /** Print progress lines on stderr. */
  progress: boolean;
  /** Standard input, for `set KEY -` (default: process.stdin). */
  stdin?: AsyncIterable<Uint8Array | string>;
  /** Aborted when stdout is gone: long commands (watch, dump) stop quietly. */
  outputClosed?: AbortSignal;
}

/** What a command has learnt so far, so an error can name the forwarder it concerns. */
interface Context {
  server?: string;
  /** CURVE (--curve-server-key…) and sealed subtrees (--sealed…) of the client's peer, set by {@link server}. */
  security?: Security;
}

/** The version in package.json (next to both src/ and dist/). */
function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Runs the CLI with `argv` (without `node` and the script) and returns the exit code. */
export async function run(argv: string[], io: Io): Promise<number> {
  const [command, ...rest] = argv;
  const ctx: Context = {};
  try {
    if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
      io.out(HELP.main);
      return command === undefined ? Exit.Usage : Exit.Ok;
    }
    if (command === '--version' || command === '-V' || command === 'version') {
      if (rest.length > 0) throw new UsageError(`${command} takes no arguments`);
      io.out(version());
      return Exit.Ok;
    }
    if (!Object.hasOwn(TAKES, command)) {
      throw new UsageError(
        !command.startsWith('-')
          ? `unknown command "${command}"; try clonekv --help`
          : Object.hasOwn(FLAGS, command.replace(/^--?|=.*$/g, ''))
            ? `"${command}" is not a command; options go after the command (clonekv <command> ${command} …); try clonekv --help`
            : `"${command}" is not a command; try clonekv --help`,
      );
    }
    const cmd = command as Command;
    const beforeDashes = rest.includes('--') ? rest.slice(0, rest.indexOf('--')) : rest;
    if (beforeDashes.includes('--help') || beforeDashes.includes('-h')) {
      io.out(HELP[cmd]);
      return Exit.Ok;
    }
    switch (cmd) {
      case 'serve':
        return await serve(rest, io);
      case 'keygen':
        return keygen(rest, io);
      case 'get':
        return await get(rest, io, ctx);
      case 'set':
        return await write(rest, io, ctx, 'set');
      case 'del':
        return await write(rest, io, ctx, 'del');
      case 'dump':
        return await dump(rest, io, ctx);
      case 'load':
        return await load(rest, io, ctx);
      case 'watch':
        return await watch(rest, io, ctx);
      case 'history':
        return await history(rest, io, ctx);
      case 'stats':
        return await stats(rest, io, ctx);
      case 'peers':
        return await peers(rest, io, ctx);
    }
  } catch (err) {
    return report(err, command ?? '', ctx, io);
  }
}

/** Prints one line for an error and returns the exit code it calls for. */
function report(err: unknown, command: string, ctx: Context, io: Io): number {
  if (err instanceof UsageError) {
    io.err(`clonekv: ${err.message}`);
    return Exit.Usage;
  }
  if (err instanceof ClonekvError) {
    const usage = err.code === ErrorCode.InvalidOption || err.code === ErrorCode.InvalidKey || err.code === ErrorCode.InvalidValue;
    // A bad argument is about the command line, not about the forwarder: no endpoint then.
    const endpoint = usage || err.code === ErrorCode.Conflict ? '' : where(err.message, ctx);
    io.err(`clonekv: ${oneLine(err.message)}${endpoint}${hint(err, command)}`);
    if (err.code === ErrorCode.Conflict) return Exit.Conflict;
    return usage ? Exit.Usage : Exit.Failed;
  }
  // Anything else is a bug in clonekv: say so, and keep the trace for the report.
  io.err(`clonekv: internal error (a bug in clonekv; please report it with this trace): ${(err as Error)?.stack ?? String(err)}`);
  return Exit.Failed;
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ');
}

/** " (forwarder at URL)" when the message does not name the forwarder already. */
function where(message: string, ctx: Context): string {
  return ctx.server !== undefined && !message.includes(ctx.server) ? ` (forwarder at ${ctx.server})` : '';
}

/** What to do next, for errors whose message does not say it already. */
function hint(err: ClonekvError, command: string): string {
  switch (err.code) {
    case ErrorCode.Timeout:
      return /--timeout|timeout option|writeTimeout/.test(err.message) ? '' : '; is `clonekv serve` running there? Raise --timeout to wait longer';
    case ErrorCode.Transport:
      if (/--port|--server|--bind/.test(err.message)) return '';
      return command === 'serve' ? '; check --port and --bind' : '; check --server (or CLONEKV_SERVER)';
    case ErrorCode.Rejected:
      return / over the limit/.test(err.message) ? '; the forwarder sets its limit with clonekv serve --max-value-bytes' : '';
    case ErrorCode.Unauthorized:
      return /unsigned write/.test(err.message) ? '; sign it with --identity FILE (a key from clonekv keygen that the forwarder\'s policy allows for this key)' : '';
    case ErrorCode.WatchOverflow:
      return '; the output was read too slowly: run the watch again (it starts from the current entries)';
    case ErrorCode.InvalidOption:
      return `; try clonekv ${command} --help`;
    default:
      return '';
  }
}

/**
 * Parses `args` for `command`: a flag the command does not take is refused by name (one line,
 * no usage dump), and so is a positional count outside `positionals`.
 */
function parse<C extends Command>(command: C, args: string[], positionals: [min: number, max: number]) {
  const takes: readonly Flag[] = TAKES[command];
  // A first, lenient pass finds every flag by name, so an unknown or misplaced one can be named.
  const { tokens } = parseArgs({ args, options: FLAGS, allowPositionals: true, strict: false, tokens: true });
  for (const token of tokens) {
    if (token.kind !== 'option') continue;
    const name = token.name as Flag;
    if (!Object.hasOwn(FLAGS, name)) {
      // `-5` or `-x` is more likely a value than a flag: say how to pass one.
      const asValue = token.rawName.startsWith('--') ? '' : ` (an argument that starts with "-" goes after "--": clonekv ${command} … -- ${token.rawName})`;
      throw new UsageError(`unknown option ${token.rawName}; try clonekv ${command} --help${asValue}`);
    }
    if (!takes.includes(name)) throw new UsageError(`${command} does not take --${name}; try clonekv ${command} --help`);
  }
  const options = Object.fromEntries(takes.map((f) => [f, FLAGS[f]]));
  let parsed;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    const m = /Option '(-[^ ']+)/.exec((err as Error).message);
    if ((err as { code?: string }).code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && m) {
      throw new UsageError(/does not take/.test((err as Error).message) ? `${m[1]} takes no value` : `${m[1]} needs a value (write ${m[1]}=VALUE for one that starts with "-")`);
    }
    throw new UsageError(`${oneLine((err as Error).message)}; try clonekv ${command} --help`);
  }
  const n = parsed.positionals.length;
  if (n < positionals[0]) throw new UsageError(`missing argument; try clonekv ${command} --help`);
  if (n > positionals[1]) throw new UsageError(`unexpected argument "${parsed.positionals[positionals[1]]}"; try clonekv ${command} --help`);
  return { values: parsed.values as Values<C>, positionals: parsed.positionals };
}

/** The parsed flags of command `C`: strings and booleans as {@link FLAGS} types them. */
type Values<C extends Command> = { [K in (typeof TAKES)[C][number]]?: (typeof FLAGS)[K]['type'] extends 'string' ? string : boolean };

/** A number given as a flag's value: a plain decimal number, never empty or NaN. */
function numberArg(flag: string, raw: string, expected: string): number {
  const n = raw.trim() === '' ? NaN : Number(raw);
  if (!Number.isFinite(n)) throw new UsageError(`--${flag} expects ${expected}, got "${raw}"`);
  return n;
}

/** A whole number in [min, max], or `fallback` when the flag is absent. */
function intArg(flag: string, raw: string | undefined, fallback: number, min: number, max: number, unit = ''): number {
  if (raw === undefined) return fallback;
  const expected = `a whole number${unit} from ${min} to ${max}`;
  const n = numberArg(flag, raw, expected);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${flag} expects ${expected}, got "${raw}"`);
  return n;
}

/**
 * A duration in ms, bounded by what a timer can wait ({@link MAX_DURATION_MS}): a longer one
 * would make a timer fire at once, again and again.
 */
function durationArg(flag: string, raw: string | undefined, fallback: number, min = 1): number {
  return intArg(flag, raw, fallback, min, MAX_DURATION_MS, ' of milliseconds');
}

/** `--ttl SECONDS`: positive, fractions allowed, at most {@link MAX_TTL_SECONDS}. */
function ttlArg(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const expected = `a number of seconds above 0 and at most ${MAX_TTL_SECONDS} (one year)`;
  const ttl = numberArg('ttl', raw, expected);
  if (ttl <= 0 || ttl > MAX_TTL_SECONDS) throw new UsageError(`--ttl expects ${expected}, got "${raw}"`);
  return ttl;
}

/** How a key or prefix is shown in a message: JSON-quoted, cut short if very long. */
function showKey(key: string): string {
  return JSON.stringify(key.length > 40 ? `${key.slice(0, 40)}…` : key);
}

/** Checks a KEY argument as the protocol will (1 to 255 bytes of UTF-8). */
function keyArg(key: string): string {
  if (key === '') throw new UsageError('KEY is empty; keys are 1 to 255 bytes of UTF-8');
  const bytes = Buffer.byteLength(key);
  if (bytes > MAX_KEY_BYTES) throw new UsageError(`key ${showKey(key)} is ${bytes} bytes; keys are 1 to ${MAX_KEY_BYTES} bytes of UTF-8`);
  return key;
}

/** Checks a PREFIX argument (empty = everything). */
function prefixArg(prefix: string | undefined): string {
  if (prefix === undefined) return '';
  const bytes = Buffer.byteLength(prefix);
  if (bytes > MAX_KEY_BYTES) throw new UsageError(`prefix ${showKey(prefix)} is ${bytes} bytes; a prefix is at most ${MAX_KEY_BYTES} bytes, as keys are`);
  return prefix;
}

/**
 * The forwarder to use: --server, else CLONEKV_SERVER, else the default. Each is a base endpoint
 * a peer can connect to (P, with P+1 and P+2 beside it), or several separated by commas (the
 * members of a failover pair, tried in turn). Checked here so a bad one is named as the flag or
 * variable it came from, and which entry.
 */
function server(values: { server?: string | undefined; 'curve-server-key'?: string | undefined; 'curve-key'?: string | undefined; sealed?: string | undefined }, ctx: Context): string {
  const curve = clientCurveArgs(values);
  const sealed = sealedArgsOrUsage(values.sealed);
  ctx.security = { ...(curve ? { curve } : {}), ...(sealed ? { sealed } : {}) };
  const env = process.env.CLONEKV_SERVER === '' ? undefined : process.env.CLONEKV_SERVER;
  const url = values.server ?? env ?? DEFAULT_SERVER;
  const source = values.server !== undefined ? '--server' : env !== undefined ? 'CLONEKV_SERVER' : 'the default server';
  const entries = url.split(',').map((e) => e.trim());
  const seen = new Set<string>();
  for (const [i, entry] of entries.entries()) {
    const which = entries.length > 1 ? ` (entry ${i + 1} of ${JSON.stringify(url)})` : '';
    const m = /^tcp:\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/.exec(entry);
    const port = m ? Number(m[2]) : NaN;
    if (!m || port < 1 || port > 65_533) {
      throw new UsageError(
        `${source} ${JSON.stringify(entry)}${which} is not a forwarder address: expected tcp://HOST:PORT with a host name or IP address ` +
          `(not *) and the forwarder's base port (1 to 65533), e.g. ${DEFAULT_SERVER}, or several separated by commas`,
      );
    }
    if (seen.has(entry)) throw new UsageError(`${source} names ${entry} twice${which}: give each server once`);
    seen.add(entry);
  }
  if (entries.length > MAX_SERVERS) throw new UsageError(`${source} names ${entries.length} servers: at most ${MAX_SERVERS}`);
  ctx.server = entries.join(',');
  return ctx.server;
}

/** Opens a peer and waits for its snapshot, with a clear error if the forwarder is not there. */
/** Runs `use` with a peer joined as {@link joinedPeer} does, and closes the peer afterwards. */
async function withJoinedPeer(url: string, subtree: string, timeoutMs: number, io: Io, use: (peer: Peer) => Promise<number>, security?: Security): Promise<number> {
  const peer = await joinedPeer(url, subtree, timeoutMs, io, security);
  try {
    return await use(peer);
  } finally {
    await peer.close();
  }
}

async function joinedPeer(url: string, subtree: string, timeoutMs: number, io: Io, security?: Security): Promise<Peer> {
  const peer = new Peer({ server: url, subtree, name: 'clonekv-cli', writeTimeout: timeoutMs, presence: false, ...security });
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

/** A writer: no snapshot, and no local value limit (the forwarder's limit is the one that counts). */
function writerPeer(url: string, timeoutMs: number, identity: string | undefined, security: Security | undefined, policy?: string): Peer {
  return new Peer({
    ...security,
    ...(identity !== undefined ? { identity } : {}),
    ...(policy !== undefined ? { policy } : {}),
    server: url,
    subtree: WRITE_ONLY_SUBTREE,
    name: 'clonekv-cli',
    writeTimeout: timeoutMs,
    maxValueBytes: MAX_VALUE_BYTES,
    presence: false,
  });
}

function formatValue(value: unknown, json: boolean): string {
  if (value instanceof Uint8Array) {
    return json ? JSON.stringify({ base64: Buffer.from(value).toString('base64') }) : Buffer.from(value).toString('utf8');
  }
  if (!json && typeof value === 'string') return value;
  return JSON.stringify(value, (_k, v: unknown) => (v instanceof Uint8Array ? { base64: Buffer.from(v).toString('base64') } : v));
}

/**
 * Text that must stay one field of a line: JSON-quoted when it holds a control character (tab,
 * newline…), starts with a double quote (so a quoted field is never ambiguous) or, where
 * fields are separated by spaces, holds a space.
 */
const NEEDS_QUOTES = /[\u0000-\u001f\u007f]|^"/;
function field(text: string, spaceSeparated = false): string {
  return NEEDS_QUOTES.test(text) || (spaceSeparated && text.includes(' ')) ? JSON.stringify(text) : text;
}

/**
 * The address peers connect to for a forwarder bound at `endpoint`: a wildcard bind (`*`,
 * 0.0.0.0, ::) is no address to connect to, so this host's name stands in for it.
 */
export function connectAddress(endpoint: string): string {
  return endpoint.replace(/^tcp:\/\/(\*|0\.0\.0\.0|\[::\]|::):/, `tcp://${hostname()}:`);
}

async function serve(args: string[], io: Io): Promise<number> {
  const { values } = parse('serve', args, [0, 0]);
  if (values.primary === true && values.backup === true) throw new UsageError('--primary and --backup exclude each other: choose one');
  const role = values.primary === true ? 'primary' : values.backup === true ? 'backup' : undefined;
  if (role === undefined) {
    for (const flag of ['partner', 'state-port', 'partner-timeout'] as const) {
      if (values[flag] !== undefined) throw new UsageError(`--${flag} applies only with --primary or --backup`);
    }
  } else if (values.partner === undefined) {
    throw new UsageError(`--${role} needs --partner tcp://HOST:PORT: the partner's state endpoint (its --state-port)`);
  }
  const options: ForwarderOptions = { port: intArg('port', values.port, role === 'backup' ? 5566 : 5556, 0, 65_533) };
  if (role !== undefined) {
    options.role = role;
    options.partner = values.partner!;
    options.statePort = intArg('state-port', values['state-port'], role === 'primary' ? 5003 : 5004, 0, 65_535);
    if (values['partner-timeout'] !== undefined) options.partnerTimeout = durationArg('partner-timeout', values['partner-timeout'], 2000, 10);
  }
  if (values.memory === true && values.data !== undefined) throw new UsageError('--memory and --data exclude each other: choose one');
  if (values.memory !== true) options.dataDir = values.data ?? DEFAULT_DATA_DIR;
  if (values.durability !== undefined) {
    if (values.durability !== 'sync' && values.durability !== 'async') throw new UsageError(`--durability takes sync or async, not ${JSON.stringify(values.durability)}`);
    if (values.memory === true) throw new UsageError('--durability needs a data directory: drop --memory');
    options.durability = values.durability;
  }
  if (values.bind !== undefined) options.bind = values.bind;
  if (values.heartbeat !== undefined) options.heartbeatInterval = durationArg('heartbeat', values.heartbeat, 1000, 10);
  if (values['max-value-bytes'] !== undefined) options.maxValueBytes = intArg('max-value-bytes', values['max-value-bytes'], 0, 1, MAX_VALUE_BYTES);
  if (values['history-max'] !== undefined) options.historyMax = intArg('history-max', values['history-max'], 0, ...OPTION_BOUNDS.historyMax);
  if (values['history-bytes'] !== undefined) options.historyBytes = intArg('history-bytes', values['history-bytes'], 0, ...OPTION_BOUNDS.historyBytes);
  if (values['dedup-ttl'] !== undefined) options.dedupTtl = intArg('dedup-ttl', values['dedup-ttl'], 0, ...OPTION_BOUNDS.dedupTtl, ' of milliseconds');
  if (values['dedup-max'] !== undefined) options.dedupMax = intArg('dedup-max', values['dedup-max'], 0, ...OPTION_BOUNDS.dedupMax);
  if (values['no-check-values'] === true) options.checkValues = false;
  if (values.policy !== undefined) options.policy = values.policy;
  if (values['curve-allow'] !== undefined && values.curve === undefined) throw new UsageError('--curve-allow applies only with --curve SERVER_KEY_FILE');
  if (values.curve !== undefined) options.curve = values.curve;
  if (values['curve-allow'] !== undefined) options.curveAllow = values['curve-allow'];
  const fwd = await Forwarder.start(options);
  if (fwd.policy !== undefined) io.err(`clonekv: policy ${fwd.policy.source} in force (${fwd.policy.writers.length} writers); SIGHUP or a change to the file reloads it`);
  // Role changes, one line each (the contract: `now active`, `now passive`, `backup absent`, `backup connected`).
  fwd.onPairEvent((event) => io.err(`clonekv: ${role} ${event.message}`));
  const e = fwd.endpoints;
  const recovery = fwd.recovery;
  // Damage repaired at start is always said, on stderr, even with --json.
  for (const repair of recovery?.repairs ?? []) io.err(`clonekv: data directory ${fwd.dataDir}: ${repair}`);
  if (values.json) {
    io.out(
      JSON.stringify({
        endpoint: fwd.endpoint,
        ...e,
        epoch: fwd.epoch,
        pid: process.pid,
        dataDir: fwd.dataDir ?? null,
        recovery: recovery ?? null,
        role: fwd.role,
        term: fwd.term,
        stateEndpoint: fwd.stateEndpoint ?? null,
        curvePublicKey: fwd.stats().curve?.publicKey ?? null,
      }),
    );
  } else {
    io.out(`clonekv forwarder listening on ${fwd.endpoint} (epoch ${fwd.epoch})`);
    if (role !== undefined) io.out(`  ${role} of a pair: state channel ${fwd.stateEndpoint}, partner ${options.partner}; ${fwd.role} for now`);
    const curve = fwd.stats().curve;
    if (curve) io.out(`  CURVE on all ports, server key ${curve.publicKey} (peers: --curve-server-key); ${curve.allowList === null ? 'any client key admitted' : `${curve.allowList} client keys admitted`}`);
    if (recovery === undefined) io.out('  in memory only (--memory): a restart starts empty');
    else if (recovery.newDirectory) io.out(`  data in ${fwd.dataDir} (new; durability ${options.durability ?? 'sync'})`);
    else {
      io.out(
        `  data in ${fwd.dataDir}: recovered ${recovery.keys} keys up to sequence ${recovery.sequence} in ${recovery.durationMs} ms` +
          (recovery.epochKept ? ', same epoch' : ', new epoch (the last async run did not shut down cleanly)'),
      );
    }
    io.out(`  snapshots and writes: ${e.snapshot}\n  updates:              ${e.publisher}\n  plain CHP writes:     ${e.collector}`);
    const at = connectAddress(fwd.endpoint);
    io.out(`peers connect with --server ${at} (or CLONEKV_SERVER=${at}); Ctrl-C stops`);
  }
  const reload = (): void => reloadPolicy(fwd, io, 'on SIGHUP');
  process.on('SIGHUP', reload);
  const watcher = watchPolicy(fwd, io);
  await new Promise<void>((resolve) => {
    const stop = (): void => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  process.off('SIGHUP', reload);
  watcher?.close();
  await fwd.close();
  return Exit.Ok;
}

/** SIGHUP or a file change: reads the policy file again; a bad one keeps the policy in force. Logged either way. */
function reloadPolicy(fwd: Forwarder, io: Io, why: 'on SIGHUP' | 'after the file changed'): void {
  const file = fwd.policy?.file;
  if (file === undefined) return io.err('clonekv: SIGHUP ignored: no --policy file to reload');
  try {
    const policy = fwd.reloadPolicy();
    io.err(`clonekv: policy ${file} reloaded (${policy.writers.length} writers) ${why}`);
  } catch (err) {
    io.err(`clonekv: policy ${file} NOT reloaded, the previous policy stays in force: ${oneLine((err as Error).message)}`);
  }
}

/** Quiet time after the last change event before the policy file is read again. */
const POLICY_WATCH_DEBOUNCE_MS = 250;

/**
 * Reloads the policy when its file changes: the directory is watched (an editor that saves by
 * renaming a new file over the old one replaces the file a direct watch would follow), and a
 * burst of events (truncate, write, rename) gives one reload, {@link POLICY_WATCH_DEBOUNCE_MS}
 * after the last. Returns what stops it; `undefined` without a policy file or when the
 * directory cannot be watched (said on stderr: SIGHUP still reloads).
 */
function watchPolicy(fwd: Forwarder, io: Io): { close(): void } | undefined {
  const file = fwd.policy?.file;
  if (file === undefined) return undefined;
  const name = basename(file);
  let timer: NodeJS.Timeout | undefined;
  const changed = (_event: string, what: string | Buffer | null): void => {
    if (what !== null && what.toString() !== name) return;
    clearTimeout(timer);
    timer = setTimeout(() => reloadPolicy(fwd, io, 'after the file changed'), POLICY_WATCH_DEBOUNCE_MS);
  };
  try {
    const watcher = watchFs(dirname(resolvePath(file)), { persistent: false }, changed);
    watcher.on('error', (err) => io.err(`clonekv: policy ${file}: no longer watched (${oneLine(err.message)}); SIGHUP still reloads it`));
    return {
      close: () => {
        clearTimeout(timer);
        watcher.close();
      },
    };
  } catch (err) {
    io.err(`clonekv: policy ${file}: cannot be watched (${oneLine((err as Error).message)}); SIGHUP reloads it`);
    return undefined;
  }
}

/**
 * `clonekv keygen`: a new identity, its secret key in a 0600 file, its public key printed; with
 * `--curve`, a CURVE keypair instead (parsed apart: `--curve` is a switch here, a file for serve).
 */
function keygen(args: string[], io: Io): number {
  if (args.includes('--curve')) return keygenCurveCommand(args, io);
  const { values } = parse('keygen', args, [0, 0]);
  const file = values.out ?? DEFAULT_IDENTITY_FILE;
  const identity = generateIdentity();
  saveIdentity(identity, file);
  if (values.json) io.out(JSON.stringify({ publicKey: identity.id, file }));
  else {
    io.out(identity.id);
    io.err(`clonekv: secret key written to ${file} (mode 0600); the public key above goes in the policy file`);
  }
  return Exit.Ok;
}

async function get(args: string[], io: Io, ctx: Context): Promise<number> {
  const { values, positionals } = parse('get', args, [1, 1]);
  const key = keyArg(positionals[0]!);
  const timeout = durationArg('timeout', values.timeout, 5000);
  const url = server(values, ctx);
  return withJoinedPeer(url, key, timeout, io, async (peer) => {
    if (!peer.has(key)) {
      io.err(`clonekv: key ${JSON.stringify(key)} not found at ${url}`);
      return Exit.NotFound;
    }
    io.out(formatValue(peer.get(key), values.json === true));
    return Exit.Ok;
  }, ctx.security);
}

/** Reads all of `source` as bytes, refusing more than `max`. */
async function readAll(source: AsyncIterable<Uint8Array | string>, max: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of source) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    size += b.length;
    if (size > max) throw new UsageError(`${what} holds more than ${max} bytes, more than any forwarder takes`);
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

/** Why a file could not be read, in a few words. */
function fileProblem(err: unknown): string {
  switch ((err as NodeJS.ErrnoException).code) {
    case 'ENOENT':
      return 'no such file';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'it is a directory';
    default:
      return oneLine((err as Error).message);
  }
}

/** The VALUE of `set`: the argument itself, stdin (`-`) or `--file`, as a string or parsed JSON. */
async function setValue(key: string, arg: string | undefined, file: string | undefined, json: boolean, io: Io): Promise<unknown> {
  let text: string;
  let what: string;
  if (file !== undefined) {
    if (arg !== undefined) throw new UsageError(`give the value of ${showKey(key)} as VALUE, - or --file, not two of them`);
    what = file;
    let bytes: Buffer;
    try {
      bytes = await readFile(file);
    } catch (err) {
      throw new UsageError(`cannot read the value of ${showKey(key)} from ${file}: ${fileProblem(err)}`);
    }
    if (bytes.length > MAX_VALUE_BYTES) throw new UsageError(`${file} holds ${bytes.length} bytes, more than any forwarder takes (${MAX_VALUE_BYTES})`);
    text = utf8(bytes, file);
  } else if (arg === '-') {
    what = 'stdin';
    text = utf8(await readAll(io.stdin ?? process.stdin, MAX_VALUE_BYTES, 'stdin'), 'stdin');
  } else if (arg === undefined) {
    throw new UsageError('missing argument VALUE (- reads it from stdin, --file FILE from a file); try clonekv set --help');
  } else {
    what = `VALUE for ${showKey(key)}`;
    text = arg;
  }
  if (!json) return text;
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new UsageError(`${what === 'stdin' || what === file ? `the value of ${showKey(key)} in ${what}` : what} is not valid JSON (${(err as Error).message}); drop --json to store it as a string`);
  }
}

function utf8(bytes: Buffer, what: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new UsageError(`${what} is not UTF-8 text; clonekv set stores text (or JSON with --json)`);
  }
}

async function write(args: string[], io: Io, ctx: Context, op: 'set' | 'del'): Promise<number> {
  const { values, positionals } = parse(op, args, op === 'set' ? [1, 2] : [1, 1]);
  const key = keyArg(positionals[0]!);
  const set = values as { file?: string; json?: boolean; ttl?: string };
  const timeout = durationArg('timeout', values.timeout, 5000);
  const ttl = ttlArg(set.ttl);
  const ifVersion = values['if-version'] === undefined ? undefined : intArg('if-version', values['if-version'], 0, 0, Number.MAX_SAFE_INTEGER);
  const url = server(values, ctx);
  const value = op === 'set' ? await setValue(key, positionals[1], set.file, set.json === true, io) : undefined;
  const confirmBy = values['confirm-by']?.split(',').map((n) => n.trim()).filter((n) => n.length > 0);
  if (confirmBy !== undefined && (values.identity === undefined || values.policy === undefined)) {
    throw new UsageError('--confirm-by needs --identity FILE (the writer) and --policy FILE (which names the recipients)');
  }
  const peer = writerPeer(url, timeout, values.identity, ctx.security, confirmBy === undefined ? undefined : values.policy);
  try {
    const seq =
      op === 'set'
        ? await peer.set(key, value, {
            ...(ttl !== undefined ? { ttl } : {}),
            ...(ifVersion !== undefined ? { ifVersion } : {}),
            ...(confirmBy !== undefined ? { confirmBy, timeout } : {}),
          })
        : await peer.delete(key, ifVersion !== undefined ? { ifVersion } : {});
    io.out(String(seq));
    return Exit.Ok;
  } finally {
    await peer.close();
  }
}

async function dump(args: string[], io: Io, ctx: Context): Promise<number> {
  const { values, positionals } = parse('dump', args, [0, 1]);
  const prefix = prefixArg(positionals[0]);
  const timeout = durationArg('timeout', values.timeout, 30_000);
  return withJoinedPeer(server(values, ctx), prefix, timeout, io, async (peer) => {
    if (values.json) {
      const obj: Record<string, unknown> = {};
      for (const e of peer.entries(prefix)) obj[e.key] = e.value;
      io.out(JSON.stringify(obj, (_k, v: unknown) => (v instanceof Uint8Array ? { base64: Buffer.from(v).toString('base64') } : v)));
    } else {
      for (const e of peer.entries(prefix)) {
        // A closed stdout (dump | head) ends the dump.
        if (io.out(`${field(e.key)}\t${field(formatValue(e.value, false))}`) === false) break;
      }
    }
    return Exit.Ok;
  }, ctx.security);
}

async function load(args: string[], io: Io, ctx: Context): Promise<number> {
  const { values, positionals } = parse('load', args, [1, 1]);
  const file = positionals[0]!;
  const timeout = durationArg('timeout', values.timeout, 30_000);
  const url = server(values, ctx);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${fileProblem(err)}`);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${file} is not valid JSON (${(err as Error).message})`);
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) throw new UsageError(`${file} must hold a JSON object { key: value }`);
  const prefix = values.prefix ?? '';
  const entries = Object.entries(data as Record<string, unknown>);
  // Check every key first: a bad one found half-way would leave the load half done.
  for (const [k] of entries) {
    const bytes = Buffer.byteLength(prefix + k);
    if (bytes === 0 || bytes > MAX_KEY_BYTES) throw new UsageError(`${file}: key ${showKey(prefix + k)} must be 1 to ${MAX_KEY_BYTES} bytes; nothing was written`);
  }
  const peer = writerPeer(url, timeout, values.identity, ctx.security);
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

/** Why a peer left a server, as `watch` says it. */
const FAILOVER_CAUSE: Record<FailoverReason, string> = {
  silence: 'silent',
  passive: 'passive, its partner is active',
  disconnected: 'connection dropped',
  'no-answer': 'no answer',
  refused: 'connection refused',
};

/** What a resync means for someone watching, in a few words naming the forwarder. */

function resyncCause(reason: ResyncReason, url: string): string {
  switch (reason) {
    case 'silence':
      return `the forwarder at ${url} has gone silent`;
    case 'epoch':
    case 'sequence':
      return `the forwarder at ${url} restarted`;
    case 'gap':
      return `updates from the forwarder at ${url} were missed`;
    case 'overflow':
      return `updates from the forwarder at ${url} came faster than they could be read`;
    case 'incomplete':
      return `a snapshot from the forwarder at ${url} was incomplete`;
    default:
      return `resyncing with the forwarder at ${url} (${String(reason)})`;
  }
}

async function watch(args: string[], io: Io, ctx: Context): Promise<number> {
  const { values, positionals } = parse('watch', args, [0, 1]);
  const prefix = prefixArg(positionals[0]);
  const timeout = durationArg('timeout', values.timeout, 30_000);
  const since = values.since === undefined ? undefined : intArg('since', values.since, 0, 0, Number.MAX_SAFE_INTEGER);
  if (since !== undefined && values['updates-only']) throw new UsageError('--since and --updates-only cannot be combined (--since prints only changes already)');
  const url = server(values, ctx);
  const peer = await joinedPeer(url, prefix, timeout, io, ctx.security);
  const ac = new AbortController();
  const stop = (): void => ac.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  io.outputClosed?.addEventListener('abort', stop, { once: true });
  // Say once when the state shown may be behind, and once when it is current again.
  let behind = false;
  // With several servers (a pair), a move to the other one says which and why, in one line.
  peer.on('failover', ({ from, to, reason }) => {
    if (behind) return;
    behind = true;
    io.err(`clonekv: left the forwarder at ${from} (${FAILOVER_CAUSE[reason]}) for ${to}; resyncing, changes may show late until it is back`);
  });
  peer.on('resync', ({ reason }) => {
    if (behind) return;
    behind = true;
    io.err(`clonekv: ${resyncCause(reason, peer.server)}; resyncing, changes may show late until it is back`);
  });
  peer.on('synced', () => {
    if (!behind) return;
    behind = false;
    io.err(`clonekv: back in sync with the forwarder at ${peer.server}`);
  });
  const json = values.json === true;
  try {
    const options = since !== undefined ? { signal: ac.signal, since } : { signal: ac.signal, updatesOnly: values['updates-only'] === true };
    for await (const e of peer.watch(prefix, options)) {
      if (io.out(formatWatch(e, json)) === false) break;
    }
    return Exit.Ok;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    io.outputClosed?.removeEventListener('abort', stop);
    await peer.close();
  }
}

function formatWatch(e: WatchEntry, json: boolean): string {
  if (json) {
    return formatValue({ key: e.key, op: e.operation, value: e.value, version: e.version, isUpdate: e.isUpdate, ...(e.reason ? { reason: e.reason } : {}) }, true);
  }
  const key = field(e.key, true);
  return e.operation === 'put' ? `put ${key} ${field(formatValue(e.value, false))}` : `del ${key} (${e.reason ?? 'deleted'})`;
}

async function history(args: string[], io: Io, ctx: Context): Promise<number> {
  const { values, positionals } = parse('history', args, [1, 1]);
  const key = keyArg(positionals[0]!);
  const limit = intArg('limit', values.limit, 100, 1, 10_000);
  const timeout = durationArg('timeout', values.timeout, 5000);
  return withJoinedPeer(server(values, ctx), WRITE_ONLY_SUBTREE, timeout, io, async (peer) => {
    const versions = await peer.history(key, { limit, timeout });
    if (values.json) {
      io.out(formatValue(versions.map((v) => ({ version: v.version, op: v.operation, value: v.value, ...(v.reason ? { reason: v.reason } : {}) })), true));
    } else {
      for (const v of versions) {
        const line = v.operation === 'put' ? `${v.version} put ${field(formatValue(v.value, false))}` : `${v.version} del (${v.reason ?? 'deleted'})`;
        if (io.out(line) === false) break;
      }
    }
    return Exit.Ok;
  }, ctx.security);
}

/** What one server of the list answered to a stats request (or why it did not). */
interface ServerAnswer {
  server: string;
  stats?: ServerStats;
  error?: ClonekvError;
}

/**
 * Asks every server of `url` (one, or several separated by commas) for its stats, each directly
 * and all at once: a passive member of a pair answers a stats request but serves no snapshot,
 * so it could not be joined to ask.
 */
async function askEach(url: string, timeoutMs: number, security?: Security): Promise<ServerAnswer[]> {
  return Promise.all(
    url.split(',').map(async (server): Promise<ServerAnswer> => {
      try {
        return { server, stats: await askServerStats(server, timeoutMs, security?.curve) };
      } catch (err) {
        if (!(err instanceof ClonekvError)) throw err;
        return { server, error: err };
      }
    }),
  );
}

/** A server's role: `standalone`, or `active`/`passive` as a member of a pair. */
function roleOf(s: ServerStats): string {
  return s.pair?.role ?? 'standalone';
}

/** "active (primary), term 3": the role in words. */
function roleText(s: ServerStats): string {
  return s.pair ? `${s.pair.role} (${s.pair.configured}), term ${s.pair.term}` : 'standalone';
}

/** "replicating, sequence 120, lag 0 (0 ms); partner tcp://… connected": replication in words. */
function replicationText(pair: NonNullable<ServerStats['pair']>): string {
  const r = pair.replication;
  const partner = pair.partner.connected ? 'connected' : `not heard for ${pair.partner.silentMs} ms`;
  return `${r.state}, sequence ${r.sequence}, lag ${r.lag} (${r.lagMs} ms); partner ${pair.partner.endpoint} ${partner}`;
}

async function stats(args: string[], io: Io, ctx: Context): Promise<number> {
  const { values } = parse('stats', args, [0, 0]);
  const timeout = durationArg('timeout', values.timeout, 5000);
  const answers = await askEach(server(values, ctx), timeout, ctx.security);
  // One server: its failure is the command's error, said as every command says it.
  if (answers.length === 1 && answers[0]!.error) throw answers[0]!.error;
  let first = true;
  for (const { server: url, stats: answer, error } of answers) {
    if (!answer) {
      if (values.json) io.out(JSON.stringify({ server: url, error: oneLine(error!.message) }));
      else io.out(`${first ? '' : '\n'}server ${url}\nunreachable: ${oneLine(error!.message)}`);
      first = false;
      continue;
    }
    const { peerList: _peers, pair, ...s } = answer;
    if (values.json) {
      if (io.out(JSON.stringify({ server: url, role: roleOf(answer), ...s, ...(pair ? { pair } : {}) })) === false) break;
    } else {
      io.out(`${first ? '' : '\n'}server ${url}\nrole ${roleText(answer)}`);
      if (pair) io.out(`replication ${replicationText(pair)}`);
      for (const [k, v] of Object.entries(s)) if (io.out(`${k} ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`) === false) break;
    }
    first = false;
  }
  return answers.some((a) => a.error) ? Exit.Failed : Exit.Ok;
}

async function peers(args: string[], io: Io, ctx: Context): Promise<number> {
  const { values } = parse('peers', args, [0, 0]);
  const timeout = durationArg('timeout', values.timeout, 5000);
  const url = server(values, ctx);
  // With several servers, each one's role and replication lag first (asked directly), then the
  // presence table of the one that serves (the peer joins whichever is active).
  const answers = url.includes(',') ? await askEach(url, timeout, ctx.security) : undefined;
  const serverLine = ({ server: at, stats: s, error }: ServerAnswer): string =>
    s ? `server ${at}\t${roleText(s)}${s.pair ? `\t${replicationText(s.pair)}` : ''}` : `server ${at}\tunreachable: ${oneLine(error!.message)}`;
  const serverJson = ({ server: at, stats: s, error }: ServerAnswer): object =>
    s ? { server: at, role: roleOf(s), ...(s.pair ? { configured: s.pair.configured, term: s.pair.term, replication: s.pair.replication, partner: s.pair.partner } : {}) } : { server: at, error: oneLine(error!.message) };
  return withJoinedPeer(url, PRESENCE_PREFIX, timeout, io, async (peer) => {
    const list = [...peer.entries<{ id: string; name: string; subtree: string; since: string }>(PRESENCE_PREFIX)]
      .map((e) => e.value)
      .filter((v) => v.id !== peer.id);
    if (values.json) {
      io.out(JSON.stringify(answers ? { servers: answers.map(serverJson), peers: list } : list));
      return Exit.Ok;
    }
    for (const a of answers ?? []) if (io.out(serverLine(a)) === false) return Exit.Ok;
    for (const v of list) if (io.out(`${v.id}\t${v.name}\t${v.subtree === '' ? '(all)' : v.subtree}\t${v.since}`) === false) break;
    return Exit.Ok;
  }, ctx.security);
}

/**
 * Entry point used by bin/clonekv.js. When the reader of stdout goes away (EPIPE: `clonekv dump
 * | head`), the command stops quietly and exits 0, as the reader chose to stop reading; when
 * stderr goes away, messages are dropped.
 */
export async function main(): Promise<void> {
  const outputClosed = new AbortController();
  let writeFailure: Error | undefined;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE' && err.code !== 'ERR_STREAM_DESTROYED') writeFailure ??= err;
    outputClosed.abort();
  });
  process.stderr.on('error', () => {});
  const code = await run(process.argv.slice(2), {
    out: (s) => {
      // A failed write destroys the stream at once; its 'error' event comes a tick later.
      if (outputClosed.signal.aborted || process.stdout.destroyed) return false;
      process.stdout.write(s + '\n');
      return !process.stdout.destroyed;
    },
    err: (s) => {
      if (!process.stderr.destroyed) process.stderr.write(s + '\n');
    },
    progress: process.stderr.isTTY === true || process.env.CLONEKV_PROGRESS === '1',
    outputClosed: outputClosed.signal,
  });
  if (writeFailure) {
    if (!process.stderr.destroyed) process.stderr.write(`clonekv: cannot write to stdout: ${writeFailure.message}\n`);
    process.exitCode = Exit.Failed;
    return;
  }
  process.exitCode = code;
}
