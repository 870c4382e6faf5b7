/**
 * Test fixtures: every fixture is AsyncDisposable and registered for teardown, so a failing
 * test still closes its sockets, timers and child processes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import type * as zmq from 'zeromq';
import { Forwarder, Peer, type ForwarderOptions, type PeerOptions } from '../src/index.ts';

/** Path of the CLI entry. */
export const CLI = fileURLToPath(new URL('../bin/clonekv.js', import.meta.url));

/** Waits until `check()` is truthy, polling on the event loop; fails after `ms` with `what`. */
export async function waitFor<T>(what: string, check: () => T | undefined | false | null, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Like {@link waitFor} for a reading that must itself wait (asking a child process, say): reads
 * again as soon as the last reading settles, until `done(reading)`; resolves with that reading.
 * Fails after `ms` with `what` and the last reading.
 */
export async function waitForReading<T>(what: string, read: () => Promise<T>, done: (reading: T) => boolean, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const reading = await within(what, read(), Math.max(1, deadline - Date.now()));
    if (done(reading)) return reading;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}; last reading: ${JSON.stringify(reading)}`);
    await new Promise((r) => setImmediate(r));
  }
}

/** Rejects if `p` does not settle within `ms`. */
export async function within<T>(what: string, p: Promise<T>, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Starts a forwarder on an ephemeral port triple, closed after the test. */
export async function forwarder(t: TestContext, options: ForwarderOptions = {}): Promise<Forwarder> {
  const f = await Forwarder.start({ port: 0, ...options });
  t.after(() => f.close());
  return f;
}

/** A fresh data directory for a durable forwarder, removed after the test. */
export function dataDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'clonekv-data-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Creates a peer, closed after the test. */
export function peer(t: TestContext, server: NonNullable<PeerOptions['server']>, options: PeerOptions = {}): Peer {
  const p = new Peer({ server, ...options });
  t.after(() => p.close());
  return p;
}

/** Creates a peer and waits until it is ready. */
export async function readyPeer(t: TestContext, server: NonNullable<PeerOptions['server']>, options: PeerOptions = {}): Promise<Peer> {
  const p = peer(t, server, options);
  await within('peer ready', p.ready());
  return p;
}

/** A plain object of a peer's entries under `prefix`. */
export function contents(p: Peer, prefix = ''): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const e of p.entries(prefix)) out[e.key] = e.value;
  return out;
}

/** A child process running the CLI, killed after the test. */
export interface CliProcess {
  readonly child: ChildProcess;
  /** Resolves with the first stdout line matching `re`. */
  line(re: RegExp, ms?: number): Promise<string>;
  /** Everything printed on stdout so far. */
  readonly stdout: () => string;
  /** Everything printed on stderr so far. */
  readonly stderr: () => string;
}

/** Spawns `clonekv ARGS` in the background, collecting stdout and stderr (killed with SIGKILL after the test if still alive). */
export function spawnCli(t: TestContext, args: string[], env: NodeJS.ProcessEnv = {}): CliProcess {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    line: async (re, ms = 15_000) =>
      waitFor(`a line matching ${re} from clonekv ${args.join(' ')} (stderr: ${err.trim()})`, () => out.split('\n').find((l) => re.test(l)), ms),
  };
}

/** Runs `clonekv ARGS` to completion. */
export async function runCli(args: string[], env: NodeJS.ProcessEnv = {}, ms = 20_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** A digest of a peer's whole map, comparable across processes. */
export function mapDigest(p: { entries(): Iterable<{ key: string; value: unknown }> }): string {
  const h = createHash('sha256');
  for (const e of [...p.entries()].sort((a, b) => (a.key < b.key ? -1 : 1))) h.update(`${e.key}\u0000${JSON.stringify(e.value)}\u0000`);
  return h.digest('hex');
}

/** Path of the child-process peer fixture. */
export const PEER_CHILD = fileURLToPath(new URL('./fixtures/peer-child.ts', import.meta.url));

/** A peer in a child process (see fixtures/peer-child.ts), killed after the test. */
export interface ChildPeer {
  readonly child: ChildProcess;
  readonly id: string;
  /** Sends a command line and resolves with the first JSON reply that `match` accepts. */
  ask<T>(line: string, match: (o: Record<string, unknown>) => T | undefined, ms?: number): Promise<T>;
}

/** Path of the child-process writer fixture (fixtures/writer-child.ts), same command protocol plus `run`/`stop`. */
export const WRITER_CHILD = fileURLToPath(new URL('./fixtures/writer-child.ts', import.meta.url));

/** Starts a peer in a child process (`script`: a fixture, default fixtures/peer-child.ts) and waits until it is ready. */
export async function childPeer(t: TestContext, endpoint: string, options: PeerOptions = {}, script = PEER_CHILD): Promise<ChildPeer> {
  const child = spawn(process.execPath, ['--import', 'tsx', script, endpoint, JSON.stringify(options)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  });
  const replies: Array<Record<string, unknown>> = [];
  let buf = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      replies.push(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
      buf = buf.slice(nl + 1);
    }
  });
  const take = <T>(match: (o: Record<string, unknown>) => T | undefined, what: string, ms: number): Promise<T> =>
    waitFor(what, () => {
      for (let i = 0; i < replies.length; i++) {
        const v = match(replies[i]!);
        if (v !== undefined) {
          replies.splice(i, 1);
          return v;
        }
      }
      return undefined;
    }, ms);
  const ready = await take((o) => (o.ready ? (o as { id: string }) : undefined), 'child peer ready', 15_000);
  return {
    child,
    id: ready.id,
    ask: (line, match, ms = 10_000) => {
      child.stdin!.write(line + '\n');
      return take(match, `reply to "${line}"`, ms);
    },
  };
}

/** Reads every message of a socket into an array until the socket closes. */
export class Inbox {
  readonly all: Buffer[][] = [];
  #read = 0;
  readonly done: Promise<void>;

  constructor(socket: zmq.Readable<Buffer[]>) {
    this.done = (async () => {
      for (;;) {
        try {
          this.all.push(await socket.receive());
        } catch {
          return; // closed
        }
      }
    })();
  }

  /** The next unread message, waiting up to `ms`. */
  async next(what: string, ms = 5000): Promise<Buffer[]> {
    await waitFor(what, () => this.#read < this.all.length, ms);
    return this.all[this.#read++]!;
  }

  /** How many messages are unread. */
  get unread(): number {
    return this.all.length - this.#read;
  }

  /** Unread messages, marked read. */
  drain(): Buffer[][] {
    const out = this.all.slice(this.#read);
    this.#read = this.all.length;
    return out;
  }
}

/**
 * A writer at full speed: `inFlight` writes outstanding at all times until stopped, each to a
 * key of its own (`name/i`), written once. Records what each acknowledgement said (the
 * sequence given to the write) and when it came.
 */
export function fullSpeed(p: Peer, name: string, inFlight: number) {
  const acked = new Map<string, number>();
  let failed = 0;
  let stopped = false;
  let n = 0;
  let lastAckAt = 0;
  const lane = async (): Promise<void> => {
    while (!stopped) {
      const i = n++;
      const key = `${name}/${i}`;
      try {
        acked.set(key, await p.set(key, i));
        lastAckAt = performance.now();
      } catch (err) {
        // Closed (a failed test's teardown): stop, or the lane would spin on rejections.
        if ((err as { code?: string }).code === 'CLONEKV_CLOSED') return;
        failed++; // not acknowledged (timed out across a failover): nothing is promised for it
      }
    }
  };
  const lanes = Array.from({ length: inFlight }, lane);
  return {
    acked,
    failed: () => failed,
    lastAckAt: () => lastAckAt,
    stop: async () => {
      stopped = true;
      await Promise.all(lanes);
    },
  };
}
