/**
 * A passive pair member forgets a peer when its active does (found by the fuzz test): replicated
 * writes register their owners on the passive, and a replicated delete of the presence key
 * `$peers/<id>` (a purge or a KVBYE at the active) must unregister it there too, or every beat
 * from a new id (hostile ones included) grows the passive's table for ever.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { waitFor } from './helpers.ts';
import { startPair } from './pair-helpers.ts';
import { rawDealer, ZERO_SEQ, EMPTY } from './raw-sockets.ts';

test('a peer that leaves the active is gone from the passive too', async (t) => {
  const { primary, backup } = await startPair(t);
  const d = rawDealer(t, primary.endpoint, { clonekv: true });
  const owners = ['a1', 'b2', 'c3', 'd4', 'e5'];
  for (const owner of owners) await d.dealer.send([Buffer.from('KVBEAT'), ZERO_SEQ, EMPTY, Buffer.from(`owner=${owner}\nname=n\n`), EMPTY]);
  await waitFor('the peers registered on both members', () => primary.stats().peers === owners.length && backup.stats().peers === owners.length);
  for (const owner of owners) await d.dealer.send([Buffer.from('KVBYE'), ZERO_SEQ, EMPTY, Buffer.from(`owner=${owner}\n`), EMPTY]);
  await waitFor('the peers gone from the active', () => primary.stats().peers === 0);
  await waitFor('the passive caught up', () => backup.sequence === primary.sequence);
  assert.equal(backup.stats().peers, 0);
  assert.deepEqual(backup.peers(), []);
});
