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
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { test, type TestContext } from 'node:test';
import { CLI, readyPeer, spawnCli, waitFor } from './helpers.ts';

/** Spawns `clonekv ARGS`, collecting stdout and stderr; SIGKILLed after the test (also when stopped). */
function cli(t: TestContext, args: string[]): { child: ChildProcess; out: () => string; err: () => string } {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
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
  return { child, out: () => out, err: () => err };
}

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

  const w = cli(t, ['watch', 'w/', '--server', endpoint]);
  await waitFor('the current entries', () => w.out().split('\n').length > 3, 15_000);
  assert.deepEqual(w.out().split('\n').slice(0, 3).sort(), [
    'put "w/with space" a b c',
    'put w/multi "first line\\nsecond line"',
    'put w/quoted "\\"starts with a quote"',
  ]);
  assert.equal(w.err(), '', 'nothing on stderr while live');

  // The forwarder goes silent (no heartbeats, no updates): the watch says so.
  serve.child.kill('SIGSTOP');
  const silent = await waitFor('a line about the silence', () => w.err().split('\n').find((l) => /silent/.test(l)), 15_000);
  assert.equal(silent, `clonekv: the forwarder at ${endpoint} has gone silent; resyncing, changes may show late until it is back`);

  // It comes back: the watch says so once it has resynced, and goes on printing changes.
  serve.child.kill('SIGCONT');
  await waitFor('a line about being back', () => /back in sync/.test(w.err()), 20_000);
  assert.deepEqual(
    w.err().trim().split('\n'),
    [silent, `clonekv: back in sync with the forwarder at ${endpoint}`],
    'one line each way, however many retries happened in between',
  );
  await writer.set('w/after', 'line 1\r\nline 2');
  await waitFor('the change after the return', () => w.out().includes('put w/after "line 1\\r\\nline 2"\n'), 15_000);
});
