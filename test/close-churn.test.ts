/**
 * A forwarder and its peers closed together, over and over, never abort the process.
 *
 * Topology: one child process (`node --import tsx test/fixtures/close-churn.ts`) holding a
 * forwarder and three peers on tcp://127.0.0.1 ephemeral ports, closed all at once 30 times.
 *
 * Before: about one close in 30 made libzmq (4.3.5) abort the process with an assertion in the
 * XPUB's subscription trie (generic_mtrie_impl.hpp) or in a pipe (pipe.cpp): the forwarder
 * unbound its sockets (which zeromq.js does on a worker thread) while the main thread still read
 * them, and peers unsubscribed their join topic just before closing the SUB that carried it.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const CHILD = fileURLToPath(new URL('./fixtures/close-churn.ts', import.meta.url));

test('60 forwarder-and-peers shutdowns in one process: none aborts it', async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, '60'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  assert.equal(signal, null, `the child was killed by ${signal}: ${err}`);
  assert.equal(code, 0, `the child exited ${code}: ${err}`);
  assert.match(out, /^ok 60$/m);
});
