/**
 * `clonekv history KEY [--limit N] [--json]` and `clonekv watch PREFIX --since N` (issue 8).
 *
 * Topology: a Forwarder and a writer Peer in this process; the CLI runs in-process through
 * `run()` (its Io captured), and once as a real `clonekv` process for the binary's path.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { run, type Io } from '../src/cli/main.ts';
import { forwarder, readyPeer, runCli, waitFor } from './helpers.ts';

/** An Io that captures stdout lines and stderr; `close()` plays the reader of stdout going away. */
function capture(): Io & { lines: string[]; errors: string[]; close(): void } {
  const ac = new AbortController();
  const lines: string[] = [];
  const errors: string[] = [];
  return {
    lines,
    errors,
    out: (s) => {
      if (ac.signal.aborted) return false;
      lines.push(...s.split('\n'));
      return true;
    },
    err: (s) => void errors.push(s),
    progress: false,
    outputClosed: ac.signal,
    close: () => ac.abort(),
  };
}

test('clonekv history prints the retained versions newest first, with --limit and --json', async (t) => {
  const fwd = await forwarder(t);
  const w = await readyPeer(t, fwd.endpoint, { name: 'w', presence: false });
  const s1 = await w.set('cfg/url', 'one');
  const s2 = await w.delete('cfg/url');
  const s3 = await w.set('cfg/url', { v: 3 });

  const io = capture();
  assert.equal(await run(['history', 'cfg/url', '--server', fwd.endpoint], io), 0, io.errors.join('\n'));
  assert.deepEqual(io.lines, [`${s3} put {"v":3}`, `${s2} del (deleted)`, `${s1} put one`]);

  const limited = capture();
  assert.equal(await run(['history', 'cfg/url', '--limit', '1', '--server', fwd.endpoint], limited), 0);
  assert.deepEqual(limited.lines, [`${s3} put {"v":3}`]);

  const bad = capture();
  assert.equal(await run(['history', 'cfg/url', '--limit', '0', '--server', fwd.endpoint], bad), 2, 'a bad --limit is a usage error');
  assert.match(bad.errors.join('\n'), /--limit/);
  const noKey = capture();
  assert.equal(await run(['history', '--server', fwd.endpoint], noKey), 2);
  const flag = capture();
  assert.equal(await run(['history', 'cfg/url', '--ttl', '5'], flag), 2, 'history takes no --ttl');

  // The real binary, --json.
  const r = await runCli(['history', 'cfg/url', '--json', '--server', fwd.endpoint]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), [
    { version: s3, op: 'put', value: { v: 3 } },
    { version: s2, op: 'delete', reason: 'deleted' },
    { version: s1, op: 'put', value: 'one' },
  ]);
});

test('clonekv history of a compacted key, and watch --since from before the history, exit 1 naming the oldest sequence held', async (t) => {
  const fwd = await forwarder(t, { historyMax: 5 });
  const w = await readyPeer(t, fwd.endpoint, { name: 'w', presence: false });
  await w.set('old', 1);
  for (let i = 0; i < 10; i++) await w.set(`n/${i}`, i);
  const oldest = fwd.sequence - 5;
  const io = capture();
  assert.equal(await run(['history', 'old', '--server', fwd.endpoint], io), 1);
  assert.match(io.errors.join('\n'), new RegExp(`compacted away.* ${oldest}`));
  const watch = capture();
  assert.equal(await run(['watch', 'n/', '--since', '1', '--server', fwd.endpoint], watch), 1);
  assert.match(watch.errors.join('\n'), new RegExp(`compacted away.* ${oldest}`));
  const both = capture();
  assert.equal(await run(['watch', 'n/', '--since', '1', '--updates-only', '--server', fwd.endpoint], both), 2, '--since with --updates-only is a usage error');
});

test('clonekv watch PREFIX --since N prints the changes after N, then live ones', async (t) => {
  const fwd = await forwarder(t);
  const w = await readyPeer(t, fwd.endpoint, { name: 'w', presence: false });
  const first = await w.set('p/a', 'a1');
  await w.set('p/b', 'b1');
  await w.delete('p/a');
  await w.set('q/x', 'outside');
  const io = capture();
  const watching = run(['watch', 'p/', '--since', String(first), '--server', fwd.endpoint], io);
  await waitFor('the replay', () => io.lines.length >= 2);
  await w.set('p/c', 'c1');
  await waitFor('the live change', () => io.lines.length >= 3);
  io.close();
  assert.equal(await watching, 0);
  assert.deepEqual(io.lines, ['put p/b b1', 'del p/a (deleted)', 'put p/c c1']);
});
