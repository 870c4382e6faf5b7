/**
 * A clonekv pair in real processes, for the failover tests (issue 9): each member is one
 * `clonekv serve --primary|--backup --partner … --json` child (bin/clonekv.js runs the sources
 * in-process), so SIGKILL and SIGSTOP hit the server itself. Ports are chosen before the start
 * (a member must know its partner's state endpoint, and a restart reuses its command line).
 *
 * ```
 *   primary  base P (P, P+1, P+2)  state S1 ◄──── backup's --partner (directly, or via a proxy)
 *   backup   base Q (Q, Q+1, Q+2)  state S2 ◄──── primary's --partner
 *   peers    server: [tcp://127.0.0.1:P, tcp://127.0.0.1:Q]
 * ```
 *
 * Also: full-speed writers that record what was acknowledged, and the checks the tests share.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import type { TestContext } from 'node:test';
import type { Peer, ServerStats } from '../src/index.ts';
import { askServerStats } from '../src/peer/server-stats.ts';
import { dataDir, spawnCli, type CliProcess } from './helpers.ts';
export { fullSpeed } from './helpers.ts';
import { tcpProxy, type TcpProxy } from './tcp-proxy.ts';

/**
 * Ports chosen before a process binds them are taken from below the kernel's ephemeral range
 * (32768 and up on Linux): a port the kernel hands out for an outgoing connection or a `port: 0`
 * bind meanwhile can then never be one of them. Other tests choosing the same port at the same
 * moment is what is left, and the random pick makes that rare (a start that meets it is retried).
 */
const LOW = 20_000;
const HIGH = 32_700;

async function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen({ port, host: '127.0.0.1', exclusive: true }, () => s.close(() => resolve(true)));
  });
}

/** A port that was free a moment ago on 127.0.0.1, below the ephemeral range. */
export async function freePort(avoid: number[] = []): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const p = LOW + Math.floor(Math.random() * (HIGH - LOW));
    if (!avoid.some((a) => Math.abs(a - p) <= 2) && (await canBind(p))) return p;
  }
  throw new Error('no free port found');
}

/** A base port P with P, P+1 and P+2 free a moment ago (none of them near `avoid`), below the ephemeral range. */
export async function freeBasePort(avoid: number[] = []): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const p = LOW + Math.floor(Math.random() * (HIGH - LOW - 2));
    if (avoid.some((a) => Math.abs(a - p) <= 2)) continue;
    if ((await canBind(p)) && (await canBind(p + 1)) && (await canBind(p + 2))) return p;
  }
  throw new Error('no free port triple found');
}

/** What `clonekv serve --json` prints at start. */
export interface ServeInfo {
  endpoint: string;
  epoch: string;
  role: 'standalone' | 'active' | 'passive';
  term: number;
  stateEndpoint: string;
  pid: number;
}

/** The pair fields of a server's stats (see COMMON.md, the shared contract). */
export type PairStats = NonNullable<ServerStats['pair']>;

/** One member of a pair: a child process that can be killed, paused and started again. */

/** Waits (at most 5 s) until every one of `ports` can be bound again. */
async function portsFree(ports: number[]): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const free = await Promise.all(ports.map(canBind));
    if (free.every(Boolean)) return;
    if (Date.now() > deadline) throw new Error(`ports ${ports.join(', ')} still in use after 5 s`);
    await new Promise((r) => setImmediate(r));
  }
}

export class Member {
  readonly name: string;
  readonly port: number;
  readonly statePort: number;
  readonly args: string[];
  readonly #t: TestContext;
  proc!: CliProcess;
  info!: ServeInfo;
  /** Starts so far. */
  starts = 0;

  constructor(t: TestContext, name: string, port: number, statePort: number, args: string[]) {
    this.#t = t;
    this.name = name;
    this.port = port;
    this.statePort = statePort;
    this.args = args;
  }

  /** `tcp://127.0.0.1:P`: what peers are given. */
  get endpoint(): string {
    return `tcp://127.0.0.1:${this.port}`;
  }

  get alive(): boolean {
    return this.proc !== undefined && this.proc.child.exitCode === null && this.proc.child.signalCode === null;
  }

  /** Starts (or starts again) with the same command line; resolves with its start line. */
  async start(): Promise<ServeInfo> {
    this.starts++;
    // A restart on the same ports: the old process is gone, but its ports may take a moment.
    for (let attempt = 0; ; attempt++) {
      this.proc = spawnCli(this.#t, this.args);
      try {
        this.info = JSON.parse(await this.proc.line(/^\{/, 15_000)) as ServeInfo;
        return this.info;
      } catch (err) {
        if (attempt >= 20 || !/in use/.test(this.proc.stderr())) throw err;
        await once(this.proc.child, 'exit');
        await portsFree([this.port, this.port + 1, this.port + 2, this.statePort]);
      }
    }
  }

  /** SIGKILL; resolves once the process is gone. */
  async kill(): Promise<void> {
    if (!this.alive) return;
    this.proc.child.kill('SIGKILL');
    await once(this.proc.child, 'exit');
  }

  pause(): void {
    this.proc.child.kill('SIGSTOP');
  }

  resume(): void {
    this.proc.child.kill('SIGCONT');
  }

  /** Its stats (KVSTATS straight to it, no join), or undefined if it does not answer in time. */
  async stats(ms = 1000): Promise<ServerStats | undefined> {
    if (!this.alive) return undefined;
    try {
      return await askServerStats(this.endpoint, ms);
    } catch {
      return undefined;
    }
  }

  /** Its pair stats, or undefined if it does not answer in time. */
  async pair(ms = 1000): Promise<PairStats | undefined> {
    return (await this.stats(ms))?.pair;
  }
}

/** Options of {@link startPair}. */
export interface PairOptions {
  /** Keep data on disk (`--data DIR`, default true) or not (`--memory`). */
  durable?: boolean;
  /** `--heartbeat` ms (default 100). */
  heartbeat?: number;
  /** `--partner-timeout` ms (default 600). */
  partnerTimeout?: number;
  /** Put a cuttable TCP proxy on each member's way to its partner's state port. */
  proxied?: boolean;
  /** With `proxied`: hold what crosses the link between the members this long each way, ms. */
  linkDelayMs?: number;
  /** Extra flags for both members. */
  extra?: string[];
}

/** A started pair. */
export interface Pair {
  readonly primary: Member;
  readonly backup: Member;
  /** Both members, primary first. */
  readonly members: readonly [Member, Member];
  /** `[primary, backup]` base endpoints: a peer's `server` list. */
  readonly servers: string[];
  /** The proxies in front of the primary's and the backup's state port (with `proxied`). */
  readonly proxies?: { toPrimary: TcpProxy; toBackup: TcpProxy };
  /** The member whose stats say active and which answers; undefined if none or both. */
  active(): Promise<Member | undefined>;
  /**
   * Waits until `active` is active, the other passive, both on one term, and `active` replicating
   * to it; with `idle` (default true: no writes going on) also at lag 0 on both sides, the
   * passive following. Under
   * full-speed writes the lag is rarely 0 at the instant it is read: pass `idle: false` then.
   */
  settled(active: Member, ms?: number, idle?: boolean): Promise<{ active: PairStats; passive: PairStats }>;
}

/** Starts a primary and a backup (in that order) and waits until they are paired. */
export async function startPair(t: TestContext, options: PairOptions = {}): Promise<Pair> {
  const { durable = true, heartbeat = 100, partnerTimeout = 600, proxied = false, linkDelayMs = 0, extra = [] } = options;
  const pPort = await freeBasePort();
  const bPort = await freeBasePort([pPort]);
  const pState = await freePort([pPort, bPort]);
  const bState = await freePort([pPort, bPort, pState]);
  let proxies: { toPrimary: TcpProxy; toBackup: TcpProxy } | undefined;
  if (proxied) proxies = { toPrimary: await tcpProxy(t, pState, { delayMs: linkDelayMs }), toBackup: await tcpProxy(t, bState, { delayMs: linkDelayMs }) };
  const toPrimary = proxies?.toPrimary.endpoint ?? `tcp://127.0.0.1:${pState}`;
  const toBackup = proxies?.toBackup.endpoint ?? `tcp://127.0.0.1:${bState}`;
  const common = ['--json', '--heartbeat', String(heartbeat), '--partner-timeout', String(partnerTimeout), ...extra];
  const storage = (): string[] => (durable ? ['--data', dataDir(t)] : ['--memory']);
  const primary = new Member(t, 'primary', pPort, pState, ['serve', '--primary', '--port', String(pPort), '--state-port', String(pState), '--partner', toBackup, ...storage(), ...common]);
  const backup = new Member(t, 'backup', bPort, bState, ['serve', '--backup', '--port', String(bPort), '--state-port', String(bState), '--partner', toPrimary, ...storage(), ...common]);
  await primary.start();
  await backup.start();
  const members = [primary, backup] as const;
  const pair: Pair = {
    primary,
    backup,
    members,
    servers: [primary.endpoint, backup.endpoint],
    ...(proxies ? { proxies } : {}),
    async active() {
      const roles = await Promise.all(members.map(async (m) => ((await m.pair(500))?.role === 'active' ? m : undefined)));
      const actives = roles.filter((m) => m !== undefined);
      return actives.length === 1 ? actives[0] : undefined;
    },
    async settled(active, ms = 15_000, idle = true) {
      const passive = active === primary ? backup : primary;
      const deadline = Date.now() + ms;
      for (;;) {
        const [a, p] = await Promise.all([active.pair(), passive.pair()]);
        if (a?.role === 'active' && p?.role === 'passive' && a.term === p.term && a.replication.state === 'replicating' && (!idle || (a.replication.lag === 0 && p.replication.lag === 0 && p.replication.state === 'following'))) {
          return { active: a, passive: p };
        }
        if (Date.now() > deadline) {
          throw new Error(`timed out after ${ms} ms waiting for ${active.name} active and ${passive.name} passive${idle ? ' at lag 0' : ', replicating'}; last: ${JSON.stringify({ [active.name]: a, [passive.name]: p })}`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
  await pair.settled(primary);
  return pair;
}


/** No sequence number was acknowledged for two different writes. */
export function assertSequencesUnique(acked: Map<string, number>): void {
  const bySeq = new Map<number, string>();
  const clashes: string[] = [];
  for (const [key, seq] of acked) {
    const other = bySeq.get(seq);
    if (other !== undefined) clashes.push(`${seq}: ${other} and ${key}`);
    bySeq.set(seq, key);
  }
  assert.deepEqual(clashes.slice(0, 10), [], `${clashes.length} sequence numbers acknowledged for two writes`);
}

/**
 * Every acknowledged write is in `p` with exactly the version its acknowledgement gave: a write
 * applied a second time would carry a later version. Returns the keys that are not (empty = ok).
 */
export function wrongVersions(p: Peer, acked: Map<string, number>): string[] {
  const wrong: string[] = [];
  for (const [key, seq] of acked) {
    const v = p.version(key);
    if (v !== seq) wrong.push(`${key}: acknowledged as ${seq}, holds ${v === undefined ? 'nothing' : `version ${v}`}`);
  }
  return wrong;
}
