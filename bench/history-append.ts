/**
 * What the retained history costs the forwarder's hot path: `UpdateLog.append` (sequence,
 * store, history, publish callback) over 10,000 keys (every 10th update a delete), with no
 * history (`historyMax` 0) and with the default (1,000,000), each in its own process (one
 * process measuring both carries the first one's garbage into the second), alternately, three
 * times. Each process appends 2,000,000 updates and reports ns per append for each half
 * million: with the default the history fills during the first two and is full, compacting,
 * in the last two. One JSON line per process.
 *
 * Run: `npx tsx bench/history-append.ts`
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Counters } from '../src/forwarder/counters.ts';
import { UpdateLog } from '../src/forwarder/update-log.ts';

const mode = /--history-max=(\d+)/.exec(process.argv.join(' '))?.[1];
if (mode === undefined) {
  for (let round = 0; round < 3; round++) {
    for (const max of [0, 1_000_000]) {
      spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), `--history-max=${max}`, `--round=${round}`], { stdio: 'inherit' });
    }
  }
} else {
  const uuid = Buffer.alloc(16, 1);
  const props = Buffer.from('enc=msgpack\n');
  const body = Buffer.alloc(100, 2);
  const keys = Array.from({ length: 10_000 }, (_, i) => [Buffer.from(`k/${i}`), `k/${i}`] as const);
  const log = new UpdateLog({
    send: () => {},
    onDeadline: () => {},
    onOwner: () => {},
    counters: new Counters(),
    history: { maxEntries: Number(mode), maxBytes: 256 * 1024 * 1024 },
  });
  const nsPerAppend: number[] = [];
  for (let part = 0; part < 4; part++) {
    const t = performance.now();
    for (let i = 0; i < 500_000; i++) {
      const [kb, k] = keys[i % keys.length]!;
      log.append(kb, k, uuid, props, i % 10 === 9 ? Buffer.alloc(0) : body, 0, 0, undefined);
    }
    nsPerAppend.push(Math.round(((performance.now() - t) * 1e6) / 500_000));
  }
  const round = Number(/--round=(\d+)/.exec(process.argv.join(' '))?.[1] ?? 0);
  console.log(JSON.stringify({ bench: 'history-append', round, historyMax: Number(mode), historyHeld: log.history.size, nsPerAppend }));
}
