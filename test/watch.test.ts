/**
 * Item 8: a watch over a big store works. Topology: an in-process Forwarder on an ephemeral port
 * triple, loaded with 200,000 keys; one Peer watching with `maxPending` 1,000 (far fewer than the
 * keys), and writing while its watch replays.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { WatchEntry } from '../src/index.ts';
import { contents, forwarder, peer, readyPeer, spawnCli, waitFor, within } from './helpers.ts';

const KEYS = 200_000;

function* bigStore(): Generator<[string, number]> {
  for (let i = 0; i < KEYS; i++) yield [`big/${i}`, i];
}

/** Applies watch events to a plain map, as a consumer keeping a copy would. */
function replay(into: Map<string, unknown>, e: WatchEntry): void {
  if (e.operation === 'put') into.set(e.key, e.value);
  else into.delete(e.key);
}

test('a watch over more entries than maxPending streams them all, then live changes; replayed, they give the final map', async (t) => {
  const fwd = await forwarder(t);
  await fwd.load(bigStore());
  const p = await readyPeer(t, fwd.endpoint, { subtree: 'big/' });
  assert.equal(p.size, KEYS);
  const copy = new Map<string, unknown>();
  let replayed = 0;
  let live = 0;
  let writes: Promise<unknown> | undefined;
  const done = (async () => {
    for await (const e of p.watch('big/', { maxPending: 1000 })) {
      replay(copy, e);
      if (e.isUpdate) live++;
      else {
        assert.equal(live, 0, 'every existing entry comes before any live change');
        replayed++;
      }
      if (replayed === KEYS / 2 && !writes) {
        // Changes while the replay is half done: to entries already yielded, to entries not
        // yet yielded, and new ones. They queue behind the replay (a few, well under maxPending).
        writes = Promise.all([p.set('big/0', 'changed'), p.set(`big/${KEYS - 1}`, 'changed too'), p.delete(`big/${KEYS - 2}`), p.set('big/new', 'new')]);
      }
      if (e.key === 'big/end') break;
    }
  })();
  let ended = false;
  void done.then(
    () => (ended = true),
    () => (ended = true),
  );
  await waitFor('replay half done', () => writes !== undefined || ended, 20_000);
  await within('writes during the replay sequenced', writes ?? Promise.resolve(), 20_000);
  await p.set('big/end', true);
  await within('watch reaches the last write', done, 20_000);
  assert.ok(replayed >= KEYS - 2, `replayed ${replayed}`);
  assert.ok(live >= 4, `live changes ${live}`);
  assert.deepEqual(copy, new Map(Object.entries(contents(p, 'big/'))));
});

test('a watch that starts before the peer is ready streams the first snapshot the same way', async (t) => {
  const fwd = await forwarder(t);
  await fwd.load(bigStore());
  const p = peer(t, fwd.endpoint, { subtree: 'big/' });
  let n = 0;
  const it = p.watch('big/', { maxPending: 10 });
  for await (const e of it) {
    assert.equal(e.isUpdate, false);
    if (++n === KEYS) break;
  }
  assert.equal(n, KEYS);
});

test('a watch stopped during its replay (abort, or break) ends cleanly and keeps nothing queued', async (t) => {
  const fwd = await forwarder(t);
  await fwd.load(Array.from({ length: 5000 }, (_, i) => [`big/${i}`, i] as const));
  const p = await readyPeer(t, fwd.endpoint, { subtree: 'big/' });
  const ac = new AbortController();
  let n = 0;
  for await (const e of p.watch('big/', { maxPending: 10, signal: ac.signal })) {
    assert.equal(e.isUpdate, false);
    if (++n === 100) ac.abort();
    assert.ok(n <= 100, 'nothing after the abort');
  }
  assert.equal(n, 100);
  const it = p.watch('big/', { maxPending: 10 });
  for await (const _ of it) break;
  // Changes after the break go nowhere: far more of them than maxPending, and no overflow.
  await Promise.all(Array.from({ length: 50 }, (_, i) => p.set(`big/${i}`, 'again')));
  assert.deepEqual(await it.next(), { value: undefined, done: true });
});

test('`clonekv watch` over a store larger than its queue prints every entry, then live changes', async (t) => {
  // Topology: an in-process Forwarder loaded with more keys than a watch's default maxPending
  // (100,000); the CLI in a child process watching it; an in-process Peer writing one change.
  const fwd = await forwarder(t);
  const n = 120_000;
  await fwd.load(Array.from({ length: n }, (_, i) => [`cli/${i}`, i] as const));
  const cli = spawnCli(t, ['watch', 'cli/', '--server', fwd.endpoint]);
  // (The output is megabytes: look for one line, not split them all on every poll.)
  await waitFor('the last existing entry printed', () => cli.stdout().includes(`put cli/${n - 1} `), 20_000);
  const writer = await readyPeer(t, fwd.endpoint);
  await writer.set('cli/zz-live', 'after the replay');
  await waitFor('the live change printed', () => cli.stdout().includes('put cli/zz-live '), 10_000);
  const keys = cli.stdout().split('\n').filter((l) => l.startsWith('put cli/')).map((l) => l.split(' ')[1]);
  assert.equal(keys.length, n + 1, 'each entry once, then the change');
  assert.equal(new Set(keys).size, n + 1);
  assert.equal(keys.at(-1), 'cli/zz-live');
});
