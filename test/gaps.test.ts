/**
 * Gap detection for a subtree peer, against a scripted forwarder. Topology: a test-made server
 * on a consecutive port triple (ROUTER P, XPUB P+1, SUB P+2) that announces the clonekv
 * extensions and publishes exactly what each case needs; one clonekv Peer on subtree `sub/`.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import * as zmq from 'zeromq';
import { SnapshotDigest } from '../src/protocol/digest.ts';
import { peer, waitFor, within, Inbox } from './helpers.ts';

const seq = (n: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigInt64BE(BigInt(n));
  return b;
};
const EMPTY = Buffer.alloc(0);
const SUBTREE = 'sub/';

/** Binds a triple and answers every snapshot request with `state` (key → [seq, value]). */
async function scriptedServer(t: TestContext) {
  let router: zmq.Router | undefined;
  let pub: zmq.XPublisher | undefined;
  let port = 0;
  for (let attempt = 0; attempt < 20 && !pub; attempt++) {
    const r = new zmq.Router({ linger: 0 });
    const p = new zmq.XPublisher({ linger: 0 });
    try {
      await r.bind('tcp://127.0.0.1:*');
      port = Number(r.lastEndpoint!.split(':').at(-1));
      await p.bind(`tcp://127.0.0.1:${port + 1}`);
      router = r;
      pub = p;
    } catch {
      r.close();
      p.close();
    }
  }
  assert.ok(router && pub, 'bound a port pair');
  t.after(() => {
    router!.close();
    pub!.close();
  });
  const subscriptions = new Inbox(pub);
  const state = new Map<string, [number, string]>();
  let current = 0;
  let requests = 0;
  void (async () => {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await router!.receive();
      } catch {
        return;
      }
      if (frames[1]?.toString() !== 'ICANHAZ?') continue;
      requests++;
      const digest = new SnapshotDigest();
      for (const [key, [s, value]] of state) {
        digest.add(Buffer.from(key), s);
        await router!.send([frames[0]!, Buffer.from(key), seq(s), EMPTY, EMPTY, Buffer.from(value)]);
      }
      const props = `clonekv=1\nepoch=e1\ncount=${digest.count}\ndigest=${digest.hex}\njoined=1\n`;
      await router!.send([frames[0]!, Buffer.from('KTHXBAI'), seq(current), EMPTY, Buffer.from(props), frames[2]!]);
    }
  })();
  return {
    endpoint: `tcp://127.0.0.1:${port}`,
    subscriptions,
    requests: () => requests,
    /** Records an update in the state and, unless `lost`, publishes it with `prev`. */
    async update(key: string, s: number, value: string, prev: number, lost = false): Promise<void> {
      state.set(key, [s, value]);
      current = s;
      if (!lost) await pub!.send([Buffer.from(key), seq(s), EMPTY, Buffer.from(`prev=${SUBTREE.length}:${prev}\n`), Buffer.from(value)]);
    },
    async heartbeat(head: number): Promise<void> {
      const heads = `${Buffer.from(SUBTREE).toString('base64url')}:${head}`;
      await pub!.send([Buffer.from('HUGZ'), seq(current), EMPTY, Buffer.from(`clonekv=1\nepoch=e1\nheads=${heads}\n`), EMPTY]);
    },
  };
}

test('a lost update followed by nothing is caught by the next heartbeat (heads)', async (t) => {
  const srv = await scriptedServer(t);
  await srv.update('sub/a', 3, 'a1', 0);
  const p = peer(t, srv.endpoint, { subtree: SUBTREE, silenceTimeout: 60_000 });
  await within('ready', p.ready());
  assert.equal(p.get('sub/a') instanceof Uint8Array, true);
  await waitFor('peer subscription seen', () => srv.subscriptions.all.some((m) => m[0]!.subarray(1).toString() === SUBTREE));
  await srv.update('sub/b', 5, 'b1', 3); // delivered
  await waitFor('sub/b applied', () => p.has('sub/b'));
  await srv.update('sub/c', 8, 'c1', 5, true); // lost, and nothing follows
  assert.equal(p.stats().gaps, 0);
  await srv.heartbeat(8);
  await waitFor('gap detected from the heartbeat', () => p.stats().gaps === 1);
  await waitFor('resynced with the lost key', () => p.has('sub/c') && p.status === 'live');
  assert.equal(srv.requests(), 2);
});

test('a lost update is caught by the next one under the subtree (prev), other subtrees are not gaps', async (t) => {
  const srv = await scriptedServer(t);
  const p = peer(t, srv.endpoint, { subtree: SUBTREE, silenceTimeout: 60_000 });
  await within('ready', p.ready());
  await waitFor('peer subscription seen', () => srv.subscriptions.all.some((m) => m[0]!.subarray(1).toString() === SUBTREE));
  // Sequences 1-9 went to other subtrees: holes in the global sequence are not gaps.
  await srv.update('sub/a', 10, 'a', 0);
  await srv.heartbeat(10);
  await srv.update('sub/b', 15, 'b', 10);
  await waitFor('both applied', () => p.has('sub/b'));
  assert.equal(p.stats().gaps, 0);
  await srv.update('sub/c', 16, 'c', 15, true); // lost
  await srv.update('sub/d', 20, 'd', 16); // says its predecessor under sub/ was 16
  await waitFor('gap detected from prev', () => p.stats().gaps === 1);
  await waitFor('resynced', () => p.has('sub/c') && p.has('sub/d') && p.status === 'live');
  assert.equal(srv.requests(), 2);
});
