/**
 * `clonekv watch` tells its user when what it shows may be behind: when the forwarder goes
 * silent it says so on stderr, and again when it is back in sync; and it quotes values (and
 * keys) that would break its line format, as `dump` does.
 *
 * Topology: a `clonekv serve --port 0 --json` child (stopped with SIGSTOP to go silent, resumed
 * with SIGCONT), a `clonekv watch` child joined to it, and an in-process writer Peer.
 *
 *   writer Peer ──┐
 *   clonekv watch ┴──► clonekv serve child (SIGSTOP / SIGCONT)
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readyPeer, spawnCli, waitFor } from './helpers.ts';

test('watch says on stderr when the forwarder goes silent and when it is back, and quotes multi-line values', async (t) => {
  const serve = spawnCli(t, ['serve', '--memory', '--port', '0', '--json']);
  const { endpoint } = JSON.parse(await serve.line(/^\{"endpoint"/)) as { endpoint: string };
  t.after(() => {
    serve.child.kill('SIGCONT'); // a stopped child would not see the SIGKILL of its teardown
  });
  const writer = await readyPeer(t, endpoint);
  await writer.set('w/multi', 'first line\nsecond line');
  await writer.set('w/quoted', '"starts with a quote');
  await writer.set('w/with space', 'a b c');

  const w = spawnCli(t, ['watch', 'w/', '--server', endpoint]);
  await waitFor('the current entries', () => w.stdout().split('\n').length > 3, 15_000);
  assert.deepEqual(w.stdout().split('\n').slice(0, 3).sort(), [
    'put "w/with space" a b c',
    'put w/multi "first line\\nsecond line"',
    'put w/quoted "\\"starts with a quote"',
  ]);
  assert.equal(w.stderr(), '', 'nothing on stderr while live');

  // The forwarder goes silent (no heartbeats, no updates): the watch says so.
  serve.child.kill('SIGSTOP');
  const silent = await waitFor('a line about the silence', () => w.stderr().split('\n').find((l) => /silent/.test(l)), 15_000);
  assert.equal(silent, `clonekv: the forwarder at ${endpoint} has gone silent; resyncing, changes may show late until it is back`);

  // It comes back: the watch says so once it has resynced, and goes on printing changes.
  serve.child.kill('SIGCONT');
  await waitFor('a line about being back', () => /back in sync/.test(w.stderr()), 20_000);
  assert.deepEqual(
    w.stderr().trim().split('\n'),
    [silent, `clonekv: back in sync with the forwarder at ${endpoint}`],
    'one line each way, however many retries happened in between',
  );
  await writer.set('w/after', 'line 1\r\nline 2');
  await waitFor('the change after the return', () => w.stdout().includes('put w/after "line 1\\r\\nline 2"\n'), 15_000);
});
