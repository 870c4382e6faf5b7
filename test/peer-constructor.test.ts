/**
 * Issue 7, items 10 and 4 (peer side): a constructor that fails throws a ClonekvError and
 * leaves nothing open; every duration option has a checked upper bound and refuses NaN and
 * negative values, naming the option.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Peer, type PeerOptions } from '../src/index.ts';

const BAD_PEER = fileURLToPath(new URL('./fixtures/bad-peer.ts', import.meta.url));

test('a peer whose constructor fails throws a ClonekvError and the process exits by itself', async (t) => {
  // Topology: none; a child process (one node process) constructs failing peers and must exit
  // on its own within the deadline (a leaked socket or timer would keep it alive).
  const child = spawn(process.execPath, ['--import', 'tsx', BAD_PEER], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  t.after(() => {
    clearTimeout(killer);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
  assert.equal(signal, null, `the child had to be killed: it did not exit by itself (stdout: ${out}, stderr: ${err})`);
  assert.equal(code, 0, err);
  const results = out.trim().split('\n').map((l) => JSON.parse(l) as { name: string; code?: string; clonekv?: boolean; constructed?: boolean; message?: string });
  assert.equal(results.length, 4, out);
  for (const r of results) {
    assert.equal(r.constructed, undefined, `${r.name}: constructed`);
    assert.equal(r.clonekv, true, `${r.name}: ${r.message}`);
    assert.ok(r.code === 'CLONEKV_TRANSPORT' || r.code === 'CLONEKV_INVALID_OPTION', `${r.name}: ${r.code}`);
  }
  assert.equal(results[0]!.code, 'CLONEKV_INVALID_OPTION', 'a wildcard host names the option');
  assert.equal(results[1]!.code, 'CLONEKV_TRANSPORT');
  assert.match(results[1]!.message!, /notaport/);
});

test('duration options refuse NaN, negative, fractional and too large values, naming the option', () => {
  const durations = ['silenceTimeout', 'writeTimeout', 'writeRetryInterval', 'snapshotRetryDelay', 'maxRetryDelay', 'heartbeatInterval'] as const;
  for (const name of durations) {
    for (const bad of [Number.NaN, -1, 1.5, 2 ** 31, Number.POSITIVE_INFINITY]) {
      assert.throws(() => new Peer({ server: 'tcp://127.0.0.1:1', [name]: bad } as PeerOptions), { code: 'CLONEKV_INVALID_OPTION', message: new RegExp(name) }, `${name}: ${bad}`);
    }
  }
  assert.throws(() => new Peer({ server: 'tcp://127.0.0.1:1', snapshotRetryDelay: 5000, maxRetryDelay: 1000 }), { code: 'CLONEKV_INVALID_OPTION', message: /maxRetryDelay/ });
});
