/**
 * Issue 7, item 13: a snapshot cannot exhaust a peer's memory. A server that streams a snapshot
 * that never ends used to make the peer store every entry. Now a snapshot in progress is bounded
 * (`maxSnapshotEntries`, `maxSnapshotBytes`); past a bound the attempt is abandoned (counted,
 * reported naming the option, its entries dropped) and retried after a backoff.
 *
 * Topology: a hostile server written here with raw zeromq: ROUTER on P answers each ICANHAZ?
 * with KVSYNCs that never end (40,000 per request, then it stops, so the test stays bounded),
 * XPUB on P+1 sends HUGZ every 50 ms, SUB on P+2 is idle; one clonekv Peer (full tree).
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { Peer, type ClonekvError } from '../src/index.ts';
import { waitFor } from './helpers.ts';
import { bindServerSockets, EMPTY, received, seqFrame } from './raw-sockets.ts';

const PER_REQUEST = 40_000;

async function hostileServer(t: TestContext): Promise<{ endpoint: string; requests: () => number }> {
  const { port, router, pub, collector } = await bindServerSockets(0, { sendHighWaterMark: 0 });
  let requests = 0;
  let open = true;
  const serve = (async () => {
    for await (const frames of received(router)) {
      if (frames[1]?.toString() !== 'ICANHAZ?') continue;
      requests++;
      const id = frames[0]!;
      const body = Buffer.from('value that never ends');
      for (let i = 0; i < PER_REQUEST && open; i++) {
        try {
          await router.send([id, Buffer.from(`k/${requests}/${i}`), seqFrame(i + 1), EMPTY, EMPTY, body]);
        } catch {
          break;
        }
      }
    }
  })();
  const hugz = setInterval(() => void pub.send([Buffer.from('HUGZ'), seqFrame(0), EMPTY, EMPTY, EMPTY]).catch(() => {}), 50);
  t.after(async () => {
    open = false;
    clearInterval(hugz);
    router.close();
    pub.close();
    collector.close();
    await serve;
  });
  return { endpoint: `tcp://127.0.0.1:${port}`, requests: () => requests };
}

test('a snapshot that never ends is abandoned at maxSnapshotEntries, its memory given back, and retried with a backoff', async (t) => {
  const server = await hostileServer(t);
  const limit = 10_000;
  const started = Date.now();
  const peer = new Peer({ server: server.endpoint, maxSnapshotEntries: limit, snapshotRetryDelay: 200, maxRetryDelay: 400 });
  t.after(() => peer.close());
  const errors: ClonekvError[] = [];
  peer.on('error', (e) => errors.push(e));
  let most = 0;
  const sample = setInterval(() => (most = Math.max(most, peer.stats().snapshotEntries)), 1);
  t.after(() => clearInterval(sample));
  await waitFor('two attempts abandoned', () => peer.stats().snapshotAborted >= 2, 15_000);
  clearInterval(sample);
  const s = peer.stats();
  assert.ok(most <= limit, `held at most ${most} entries`);
  assert.ok(most > 0, 'the attempts did hold entries');
  assert.equal(peer.status, 'syncing');
  assert.equal(peer.size, 0, 'nothing applied');
  // Backing off: no tight loop of requests. One per abandoned attempt, plus a retry for each
  // attempt that stalled (on a loaded machine), which takes at least snapshotRetryDelay (200 ms)
  // without progress: a tight loop would ask thousands of times.
  const elapsed = Date.now() - started;
  assert.ok(s.snapshotRequests <= s.snapshotAborted + 1 + Math.floor(elapsed / 200), `requests ${s.snapshotRequests}, aborted ${s.snapshotAborted} in ${elapsed} ms`);
  const reported = errors.find((e) => e.message.includes('maxSnapshotEntries'));
  assert.ok(reported, `an error event names the option: ${errors.map((e) => e.message).join(' | ')}`);
  assert.equal(reported.code, 'CLONEKV_MALFORMED');
  assert.ok(reported.message.includes(server.endpoint), 'and the endpoint');
  // Between attempts nothing is held.
  await waitFor('the attempt dropped', () => peer.stats().snapshotEntries === 0 || peer.stats().snapshotAborted > s.snapshotAborted, 5000);
});

test('maxSnapshotBytes bounds the bytes held, and both bounds are checked options', async (t) => {
  const server = await hostileServer(t);
  const peer = new Peer({ server: server.endpoint, maxSnapshotBytes: 100_000, snapshotRetryDelay: 200 });
  t.after(() => peer.close());
  const errors: ClonekvError[] = [];
  peer.on('error', (e) => errors.push(e));
  await waitFor('an attempt abandoned', () => peer.stats().snapshotAborted >= 1, 15_000);
  assert.ok(errors.some((e) => e.message.includes('maxSnapshotBytes')));
  for (const bad of [0, -1, 1.5, Number.NaN, 2 ** 41]) {
    assert.throws(() => new Peer({ server: server.endpoint, maxSnapshotBytes: bad }), { code: 'CLONEKV_INVALID_OPTION', message: /maxSnapshotBytes/ });
  }
  for (const bad of [0, -1, 1.5, Number.NaN]) {
    assert.throws(() => new Peer({ server: server.endpoint, maxSnapshotEntries: bad }), { code: 'CLONEKV_INVALID_OPTION', message: /maxSnapshotEntries/ });
  }
});
