/**
 * Late join under load: a writer sends 20,000 updates over 500 keys as fast as the forwarder
 * acknowledges them; a peer joins in the middle. It takes a snapshot, then applies every later
 * update exactly once, and ends with exactly the writer's final state. A second, full peer that
 * joins at the end shows the forwarder's map to compare with.
 *
 *   writer Peer ──20,000 sets──► Forwarder ──snapshot + live updates──► late Peer (joins mid-way)
 *                                          └─────────snapshot─────────► full Peer (joins at the end)
 *
 * Run: npx tsx examples/late-join/main.ts   (uses CLONEKV_SERVER if set, otherwise starts its own
 * forwarder on a free port). Exits 0 when every check passed.
 */
import { randomBytes } from 'node:crypto';
import { Forwarder, Peer, type WatchEntry } from '../../src/index.ts';
import { check, until } from '../support.ts';

const HARD_TIMEOUT_MS = 10_000;
setTimeout(() => {
  console.error(`late-join: FAILED, still running after ${HARD_TIMEOUT_MS} ms`);
  process.exit(1);
}, HARD_TIMEOUT_MS).unref();

const UPDATES = 20_000;
const KEYS = 500;
/** Writes in flight at once. */
const WINDOW = 256;
/** A namespace of its own, so runs against a shared server do not see each other. */
const NS = `late-join/${randomBytes(4).toString('hex')}/`;



/** A peer's entries under NS, as `key → [value, version]`, sorted by key. */
function state(p: Peer): string {
  return JSON.stringify([...p.entries(NS)].map((e) => [e.key, e.value, e.version]).sort());
}

async function main(): Promise<void> {
  const external = process.env.CLONEKV_SERVER;
  const fwd = external ? undefined : await Forwarder.start({ port: 0 });
  const server = external ?? fwd!.endpoint;
  console.log(`late-join: forwarder at ${server}${external ? ' (CLONEKV_SERVER)' : ' (in-process)'}`);
  const writer = new Peer({ server, subtree: NS, name: 'writer' });
  const peers: Peer[] = [writer];
  const stop = new AbortController();
  try {
    await writer.ready();

    // The writer: update i sets key i % KEYS to i; every acknowledged sequence is kept.
    const acked: number[] = [];
    let written = 0;
    const started = Date.now();
    const writing = (async () => {
      const inflight: Promise<void>[] = [];
      for (let i = 1; i <= UPDATES; i++) {
        inflight.push(writer.set(`${NS}k${i % KEYS}`, i).then((seq) => void acked.push(seq)));
        if (inflight.length >= WINDOW) {
          await Promise.all(inflight);
          inflight.length = 0;
          written = i;
        }
      }
      await Promise.all(inflight);
      written = UPDATES;
    })();
    // Whatever happens, never leave the writer running unobserved.
    writing.catch(() => {});

    await until('the writer to be a third of the way', () => written >= UPDATES / 3);
    console.log(`late peer: joining after ${written} of ${UPDATES} updates`);
    const late = new Peer({ server, subtree: NS, name: 'late' });
    peers.push(late);

    // Watch from the start: first the current entries (isUpdate false), then every later change.
    const snapshot = new Map<string, number>();
    const live: WatchEntry[] = [];
    const watching = (async () => {
      for await (const e of late.watch(NS, { signal: stop.signal })) {
        if (e.isUpdate) live.push(e);
        else snapshot.set(e.key, e.version);
      }
    })();
    await late.ready();
    await writing;
    const ms = Date.now() - started;
    console.log(`writer: ${UPDATES} updates acknowledged in ${ms} ms (${Math.round((UPDATES / ms) * 1000)}/s)`);

    // The last write under NS that the snapshot contains; every write after it must arrive live.
    const snapshotAt = Math.max(0, ...snapshot.values());
    const expected = acked.filter((seq) => seq > snapshotAt).sort((a, b) => a - b);
    await until('the late peer to apply the last update', () => live.length >= expected.length);
    stop.abort();
    await watching;
    console.log(
      `late peer: snapshot of ${snapshot.size} keys up to sequence ${snapshotAt}, then ${live.length} live updates ` +
        `(${late.stats().resyncs} resyncs, ${late.stats().gaps} gaps)`,
    );
    check(snapshot.size > 0 && snapshot.size <= KEYS && expected.length < UPDATES, 'the late peer joined in the middle of the stream');
    check(late.stats().resyncs === 0, 'it never had to resync');
    const versions = live.map((e) => e.version);
    check(versions.every((v, i) => i === 0 || v > versions[i - 1]!), 'live updates arrived in sequence order, none twice');
    check(live.length === expected.length, `exactly ${expected.length} live updates: one per write after the snapshot`);
    check(versions.every((v, i) => v === expected[i]), 'and they are exactly those writes: nothing missed, nothing doubled');

    // The final state: computed from the writes, seen by the writer, the late peer and a full peer.
    const full = new Peer({ server, name: 'full' });
    peers.push(full);
    await full.ready();
    const finalValues = new Map<string, number>();
    for (let i = 1; i <= UPDATES; i++) finalValues.set(`${NS}k${i % KEYS}`, i);
    check([...finalValues].every(([k, v]) => late.get(k) === v) && late.size === KEYS, `the late peer holds the ${KEYS} final values`);
    check(state(late) === state(full), "the late peer's keys, values and versions equal the forwarder's map (via a full peer)");
    check(state(writer) === state(full), "and so do the writer's");
    if (fwd) {
      await until("the full peer to reach the forwarder's sequence", () => full.sequence === fwd.sequence);
      console.log(`  ok: the full peer is at the forwarder's sequence (${fwd.sequence})`);
    }
    console.log('late-join: all checks passed');
  } finally {
    stop.abort();
    await Promise.all(peers.map((p) => p.close()));
    await fwd?.close();
  }
}

main().catch((err: unknown) => {
  console.error(`late-join: FAILED: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
