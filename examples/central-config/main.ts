/**
 * Central configuration: an operator script pushes a whole config tree (a nested object flattened
 * into keys such as `config/app/db/host`), waits until the forwarder has acknowledged every key,
 * and later changes one value safely with compare-and-set (`ifVersion`). Peers that join at any
 * time (before the push, after it, after the update) all end up with the full, current tree.
 *
 *   operator Peer ──set × N, then set {ifVersion}──► Forwarder ──► early / afterPush / afterUpdate Peers
 *
 * Run: npx tsx examples/central-config/main.ts   (uses CLONEKV_SERVER if set, otherwise starts
 * its own forwarder on a free port). Exits 0 when every check passed.
 */
import { deepStrictEqual } from 'node:assert/strict';
import { ConflictError, Forwarder, Peer } from '../../src/index.ts';
import { check, until } from '../support.ts';

const HARD_TIMEOUT_MS = 10_000;
setTimeout(() => {
  console.error(`central-config: FAILED, still running after ${HARD_TIMEOUT_MS} ms`);
  process.exit(1);
}, HARD_TIMEOUT_MS).unref();

const ROOT = 'config/';
const SUBTREE = 'config/app/';

/** The configuration as the operator keeps it (in a repository, say). */
const desired = {
  app: {
    db: { host: 'db.internal', port: 5432, pool: { min: 2, max: 10 } },
    cache: { backend: 'redis://cache.internal:6379', ttlSeconds: 60 },
    features: { search: true, beta: false },
    regions: ['eu-west-1', 'us-east-1'],
    owner: 'platform-team',
  },
};

type Tree = { [key: string]: unknown };

/** Flattens nested plain objects into `prefix/a/b` keys; arrays and scalars are values. */
function flatten(tree: Tree, prefix: string): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const [name, value] of Object.entries(tree)) {
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      for (const [k, v] of flatten(value as Tree, `${prefix}${name}/`)) out.set(k, v);
    } else {
      out.set(`${prefix}${name}`, value);
    }
  }
  return out;
}



/** A peer's keys under the subtree, as a plain object sorted by key. */
function tree(p: Peer): Record<string, unknown> {
  return Object.fromEntries([...p.entries(SUBTREE)].map((e) => [e.key, e.value]).sort(([a], [b]) => String(a).localeCompare(String(b))));
}

function sameTree(p: Peer, expected: Map<string, unknown>): boolean {
  try {
    deepStrictEqual(tree(p), Object.fromEntries([...expected].sort(([a], [b]) => a.localeCompare(b))));
    return true;
  } catch {
    return false;
  }
}

/**
 * Read-modify-write with compare-and-set: computes the new value from the local copy and writes it
 * only if nobody changed the key meanwhile; on a conflict, waits for the newer value and retries.
 */
async function update<T>(peer: Peer, who: string, key: string, change: (current: T) => T): Promise<{ seq: number; conflicts: number }> {
  for (let conflicts = 0; ; conflicts++) {
    const version = peer.version(key) ?? 0;
    const next = change(peer.get<T>(key)!);
    try {
      const seq = await peer.set(key, next, { ifVersion: version });
      console.log(`  ${who}: ${key} = ${JSON.stringify(next)} (was version ${version}, now ${seq})`);
      return { seq, conflicts };
    } catch (err) {
      if (!(err instanceof ConflictError) || conflicts >= 5) throw err;
      console.log(`  ${who}: lost the race (${err.message}); re-reading and retrying`);
      await until(`${who} to see version ${err.currentVersion}`, () => (peer.version(key) ?? 0) >= err.currentVersion);
    }
  }
}

async function main(): Promise<void> {
  const external = process.env.CLONEKV_SERVER;
  const fwd = external ? undefined : await Forwarder.start({ port: 0 });
  const server = external ?? fwd!.endpoint;
  console.log(`central-config: forwarder at ${server}${external ? ' (CLONEKV_SERVER)' : ' (in-process)'}`);
  const peers: Peer[] = [];
  const join = async (name: string): Promise<Peer> => {
    const p = new Peer({ server, subtree: SUBTREE, name });
    peers.push(p);
    await p.ready();
    return p;
  };
  try {
    const operator = await join('operator');
    // On a shared server, start from a clean subtree.
    const stale = [...operator.keys(SUBTREE)];
    if (stale.length > 0) {
      await Promise.all(stale.map((k) => operator.delete(k)));
      console.log(`operator: removed ${stale.length} keys left under ${SUBTREE}`);
    }

    const early = await join('early');
    console.log(`early peer: joined before the push, holds ${early.size} keys`);

    const flat = flatten(desired, ROOT);
    console.log(`operator: pushing ${flat.size} keys`);
    const seqs = await Promise.all([...flat].map(([key, value]) => operator.set(key, value)));
    check(seqs.length === flat.size, `all ${flat.size} writes acknowledged (sequences ${Math.min(...seqs)}..${Math.max(...seqs)})`);
    check(new Set(seqs).size === seqs.length, 'each write got its own sequence');
    check(sameTree(operator, flat), "the operator's own copy already shows every write (read-your-writes)");

    const afterPush = await join('after-push');
    check(sameTree(afterPush, flat), 'a peer joining after the push gets the full tree from its snapshot');
    check(afterPush.get(`${ROOT}app/db/host`) === 'db.internal', `${ROOT}app/db/host = db.internal`);
    await until('the early peer to receive the push', () => sameTree(early, flat));
    console.log('  ok: the peer that joined before the push received every key live');

    // Two admins raise the pool size at the same moment. Both read max = 10 at the same version,
    // so exactly one compare-and-set wins; the other re-reads (15) and retries.
    const poolMax = `${ROOT}app/db/pool/max`;
    const admin = await join('admin-2');
    await until('admin-2 to hold the pushed tree', () => sameTree(admin, flat));
    console.log('operator and admin-2: raise db/pool/max by 5 at the same time, with ifVersion');
    const results = await Promise.all([
      update<number>(operator, 'operator', poolMax, (n) => n + 5),
      update<number>(admin, 'admin-2', poolMax, (n) => n + 5),
    ]);
    check(results.reduce((n, r) => n + r.conflicts, 0) === 1, 'exactly one of the two lost the race once and retried');
    const last = Math.max(...results.map((r) => r.seq));
    await until('the operator to see the last increment', () => (operator.version(poolMax) ?? 0) >= last);
    check(operator.get(poolMax) === 20, 'no increment was lost: pool max is 20');

    const staleVersion = results.map((r) => r.seq).sort((a, b) => a - b)[0]!;
    try {
      await operator.set(poolMax, 999, { ifVersion: staleVersion });
      throw new Error('a write with a stale version was accepted');
    } catch (err) {
      if (!(err instanceof ConflictError)) throw err;
      check(err.currentVersion === operator.version(poolMax), `a write with a stale version is refused: ${err.message}`);
    }

    const updated = new Map(flat).set(poolMax, 20);
    const afterUpdate = await join('after-update');
    check(sameTree(afterUpdate, updated), 'a peer joining after the update gets the updated tree');
    await until('every peer to converge', () => peers.every((p) => sameTree(p, updated)));
    console.log(`  ok: all ${peers.length} peers hold the same ${updated.size} keys with the same values`);
    const versions = (p: Peer): string => JSON.stringify([...p.entries(SUBTREE)].map((e) => [e.key, e.version]).sort());
    check(peers.every((p) => versions(p) === versions(operator)), 'and the same versions');
    console.log('central-config: all checks passed');
  } finally {
    await Promise.all(peers.map((p) => p.close()));
    await fwd?.close();
  }
}

main().catch((err: unknown) => {
  console.error(`central-config: FAILED: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
