/**
 * Long CLI operations show progress. Topology: an in-process Forwarder on an ephemeral port
 * triple, seeded in-process; `clonekv dump` and `clonekv load` as child processes.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { forwarder, readyPeer, runCli, waitFor } from './helpers.ts';

test('dump of a large snapshot reports progress on stderr and prints every key', async (t) => {
  const fwd = await forwarder(t);
  const N = 150_000;
  await fwd.load(Array.from({ length: N }, (_, i) => [`big/${i}`, i] as const));
  const out = await runCli(['dump', 'big/', '--json', '--server', fwd.endpoint], { CLONEKV_PROGRESS: '1' });
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stderr, /receiving snapshot: 65536 keys/);
  assert.match(out.stderr, /receiving snapshot: 131072 keys/);
  const dumped = JSON.parse(out.stdout) as Record<string, number>;
  assert.equal(Object.keys(dumped).length, N);
  assert.equal(dumped['big/149999'], 149_999);
});

test('load of a large file reports progress and ends with every key sequenced', async (t) => {
  const fwd = await forwarder(t);
  const dir = await mkdtemp(join(tmpdir(), 'clonekv-load-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'config.json');
  const N = 25_000;
  await writeFile(file, JSON.stringify(Object.fromEntries(Array.from({ length: N }, (_, i) => [`k${i}`, { i }]))));
  const out = await runCli(['load', file, '--prefix', 'loaded/', '--server', fwd.endpoint], { CLONEKV_PROGRESS: '1' });
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stderr, /loaded 10000 of 25000 keys/);
  assert.match(out.stdout, /loaded 25000 keys/);
  const reader = await readyPeer(t, fwd.endpoint, { subtree: 'loaded/' });
  await waitFor('every loaded key', () => reader.size === N);
  assert.deepEqual(reader.get('loaded/k24999'), { i: 24_999 });
});
