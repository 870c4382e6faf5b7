/**
 * What the retained history costs the forwarder's hot path: `UpdateLog.append` (sequence,
 * store, history, publish callback) for 1,000,000 updates over 10,000 keys (every 10th a
 * delete), with no history (`historyMax` 0), a small one (1,000) and the default (1,000,000,
 * so it fills up and stays full). One JSON line per round, ns per append.
 *
 * Run: `npx tsx bench/history-append.ts`
 */
import { Counters } from '../src/forwarder/counters.ts';
import { UpdateLog } from '../src/forwarder/update-log.ts';

const N = 1_000_000;
const uuid = Buffer.alloc(16, 1);
const props = Buffer.from('enc=msgpack\n');
const body = Buffer.alloc(100, 2);
const keys = Array.from({ length: 10_000 }, (_, i) => [Buffer.from(`k/${i}`), `k/${i}`] as const);

function nsPerAppend(maxEntries: number): number {
  const log = new UpdateLog({ send: () => {}, onDeadline: () => {}, onOwner: () => {}, counters: new Counters(), history: { maxEntries, maxBytes: 256 * 1024 * 1024 } });
  const t = performance.now();
  for (let i = 0; i < N; i++) {
    const [kb, k] = keys[i % keys.length]!;
    log.append(kb, k, uuid, props, i % 10 === 9 ? Buffer.alloc(0) : body, 0, 0, undefined);
  }
  return Math.round(((performance.now() - t) * 1e6) / N);
}

for (let round = 0; round < 3; round++) {
  const none = nsPerAppend(0);
  const small = nsPerAppend(1000);
  const full = nsPerAppend(1_000_000);
  console.log(JSON.stringify({ bench: 'history-append', round, nsNoHistory: none, nsHistory1k: small, nsHistory1M: full }));
}
