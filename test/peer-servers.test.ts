/**
 * Issue 9: the `server` option takes one server or several (an array of base endpoints or
 * endpoint objects, or one comma-separated string); each entry is checked and named when bad,
 * and the same server twice is refused. The CLI's --server and CLONEKV_SERVER take the same.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ClonekvError, Peer, resolveServers, type FailoverInfo, type PeerOptions } from '../src/index.ts';
import { forwarder, peer, runCli, spawnCli, waitFor, within } from './helpers.ts';

const A = { snapshot: 'tcp://a:5556', publisher: 'tcp://a:5557', collector: 'tcp://a:5558' };
const B = { snapshot: 'tcp://b:5566', publisher: 'tcp://b:5567', collector: 'tcp://b:5568' };

test('server: one endpoint, a comma-separated list, an array of strings or of endpoint objects', () => {
  assert.deepEqual(resolveServers(undefined), [{ snapshot: 'tcp://127.0.0.1:5556', publisher: 'tcp://127.0.0.1:5557', collector: 'tcp://127.0.0.1:5558' }]);
  assert.deepEqual(resolveServers('tcp://a:5556'), [A]);
  assert.deepEqual(resolveServers('tcp://a:5556,tcp://b:5566'), [A, B]);
  assert.deepEqual(resolveServers('tcp://a:5556, tcp://b:5566'), [A, B], 'spaces after commas are allowed');
  assert.deepEqual(resolveServers(['tcp://a:5556', 'tcp://b:5566']), [A, B]);
  assert.deepEqual(resolveServers([A, 'tcp://b:5566']), [A, B]);
  assert.deepEqual(resolveServers(A), [A]);
});

test('server: a bad entry is named; an empty list and the same server twice are refused', () => {
  const refuses = (server: unknown, option: string, message: RegExp): void => {
    assert.throws(
      () => new Peer({ server } as PeerOptions),
      (e: unknown) => e instanceof ClonekvError && e.code === 'CLONEKV_INVALID_OPTION' && (e as { option?: string }).option === option && message.test(e.message),
      `${JSON.stringify(server)} → ${option}`,
    );
  };
  refuses('tcp://a:5556,nowhere', 'server (entry 2 of "tcp://a:5556,nowhere")', /got "nowhere"/);
  refuses('tcp://a:5556,', 'server (entry 2 of "tcp://a:5556,")', /got ""/);
  refuses(['tcp://a:5556', 'tcp://*:5566'], 'server[1]', /a host to connect to/);
  refuses(['tcp://a:5556', 42], 'server[1]', /got number/);
  refuses([A, { snapshot: 'tcp://b:1' }], 'server[1].publisher', /endpoint string/);
  refuses([], 'server', /at least one/);
  refuses(['tcp://a:5556', 'tcp://a:5556'], 'server[1]', /already given as server\[0\]/);
  refuses('tcp://a:5556,tcp://b:5566,tcp://a:5556', 'server (entry 3 of "tcp://a:5556,tcp://b:5566,tcp://a:5556")', /already given/);
  refuses([A, 'tcp://a:5556'], 'server[1]', /already given/);
  refuses(Array.from({ length: 17 }, (_, i) => `tcp://h${i}:5556`), 'server', /at most 16/);
});

test('CLI: --server and CLONEKV_SERVER take a list; a bad entry is named; the peer moves past a dead first server', async (t) => {
  const fwd = await forwarder(t);
  // A server that is not there: a forwarder started and closed again (its ports are free).
  const gone = await forwarder(t);
  const dead = gone.endpoint;
  await gone.close();
  const [set, bad, twice] = await Promise.all([
    runCli(['set', 'list/key', 'hello', '--server', `${dead},${fwd.endpoint}`, '--timeout', '10000']),
    runCli(['get', 'list/key'], { CLONEKV_SERVER: `${fwd.endpoint},tcp://nowhere` }),
    runCli(['get', 'list/key', '--server', `${fwd.endpoint},${fwd.endpoint}`]),
  ]);
  // After the write: the reader finds it through the same list, past the dead first server.
  const get = await runCli(['get', 'list/key', '--timeout', '10000'], { CLONEKV_SERVER: `${dead},${fwd.endpoint}` });
  assert.equal(set.code, 0, set.stderr);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /CLONEKV_SERVER "tcp:\/\/nowhere" \(entry 2 of/);
  assert.equal(twice.code, 2);
  assert.match(twice.stderr, /twice/);
  assert.equal(get.code, 0, get.stderr);
  assert.match(get.stdout, /hello/);
});

test('CLI: watch says in one line when it leaves a forwarder for the other, and shows the map of the other', async (t) => {
  const first = await forwarder(t, { heartbeatInterval: 100 });
  const second = await forwarder(t, { heartbeatInterval: 100 });
  const w = spawnCli(t, ['watch', 'w/', '--server', `${first.endpoint},${second.endpoint}`]);
  const onFirst = await runCli(['set', 'w/first', 'here', '--server', first.endpoint]);
  assert.equal(onFirst.code, 0, onFirst.stderr);
  await w.line(/^put w\/first here$/);
  const onSecond = await runCli(['set', 'w/second', 'there', '--server', second.endpoint]);
  assert.equal(onSecond.code, 0, onSecond.stderr);
  await first.close();
  await waitFor(
    'the failover line',
    () => w.stderr().includes(`clonekv: left the forwarder at ${first.endpoint} (connection dropped) for ${second.endpoint}`),
    15_000,
  );
  await w.line(/^put w\/second there$/);
  await waitFor('back in sync', () => w.stderr().includes(`back in sync with the forwarder at ${second.endpoint}`), 15_000);
});

test('a dead first server (its address refuses connections) is left after snapshotRetryDelay, not silenceTimeout', async (t) => {
  const fwd = await forwarder(t);
  const gone = await forwarder(t);
  const dead = gone.endpoint;
  await gone.close();
  await fwd.load([['k', 1]]);
  const moves: string[] = [];
  // The defaults: snapshotRetryDelay 1 s, silenceTimeout 3 s.
  const p = peer(t, [dead, fwd.endpoint]);
  p.on('failover', (f: FailoverInfo) => moves.push(f.reason));
  const started = Date.now();
  await within('ready through the live server', p.ready(), 10_000);
  const took = Date.now() - started;
  assert.deepEqual(moves, ['refused']);
  assert.ok(took < 2500, `ready after ${took} ms (a dead server must not cost silenceTimeout, 3000 ms)`);
  assert.equal(p.get('k'), 1);
  t.diagnostic(`ready after ${took} ms`);
});
