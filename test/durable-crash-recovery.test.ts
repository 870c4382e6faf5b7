/**
 * What a durable forwarder recovers after SIGKILL (not only after a clean close): the
 * de-duplication window, ttl deadlines as absolute times, and the owners of ephemeral keys.
 *
 * Topology: `clonekv serve --data DIR` child processes (one process each), the second started on
 * the same port triple after the first is killed; a raw clonekv DEALER that writes with a chosen
 * uuid; an in-process owner Peer that lives through the restart; a fresh reader Peer.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { test, type TestContext } from 'node:test';
import * as zmq from 'zeromq';
import { dataDir, Inbox, peer, readyPeer, spawnCli, waitFor, within } from './helpers.ts';

async function serve(t: TestContext, dir: string, port: number) {
  const proc = spawnCli(t, ['serve', '--data', dir, '--port', String(port), '--json', '--heartbeat', '100']);
  const info = JSON.parse(await proc.line(/^\{/)) as { endpoint: string; epoch: string };
  return { ...proc, ...info, port: Number(info.endpoint.split(':').at(-1)) };
}

/** Sends one KVSET from a raw clonekv DEALER and returns its KVACK's status and sequence. */
async function rawWrite(t: TestContext, endpoint: string, key: string, uuid: Buffer, props: string): Promise<{ status: string; seq: number }> {
  const dealer = new zmq.Dealer({ linger: 0, routingId: `ckv1${randomBytes(8).toString('hex')}` });
  t.after(() => dealer.close());
  dealer.connect(endpoint);
  const inbox = new Inbox(dealer);
  await dealer.send([Buffer.from(key), Buffer.alloc(8), uuid, Buffer.from(props), Buffer.from([0xa1, 0x76])]);
  const ack = await inbox.next(`the KVACK for ${key}`);
  dealer.close();
  return { status: /status=(\w+)/.exec(ack[3]!.toString())![1]!, seq: Number(ack[1]!.readBigInt64BE()) };
}

test('after a SIGKILL: a conditional retry gets its first answer and is not applied again; a ttl keeps its deadline; a returning owner keeps its key', async (t) => {
  const dir = dataDir(t);
  const first = await serve(t, dir, 0);
  const { port, epoch } = first;
  const uuid = randomBytes(16);
  const written = await rawWrite(t, first.endpoint, 'once', uuid, 'enc=msgpack\nif-version=0\n');
  assert.equal(written.status, 'ok');
  const owner = peer(t, first.endpoint, { name: 'owner', silenceTimeout: 600, snapshotRetryDelay: 50, maxRetryDelay: 300 });
  await within('owner ready', owner.ready());
  await owner.set('eph/lock', 'mine', { ephemeral: true, ifVersion: 0 });
  await owner.set('short', 'lived', { ttl: 2 });
  const ttlFrom = Date.now();
  first.child.kill('SIGKILL');
  await once(first.child, 'exit');
  const second = await serve(t, dir, port);
  assert.equal(second.epoch, epoch, 'the epoch is kept');
  // The same write again (same uuid, create-if-absent): without the recovered outcome it would
  // be refused as a conflict with itself.
  const retry = await rawWrite(t, second.endpoint, 'once', uuid, 'enc=msgpack\nif-version=0\n');
  assert.deepEqual(retry, written, 'the retry gets the first answer');
  const reader = await readyPeer(t, second.endpoint, { presence: false });
  assert.equal(reader.version('once'), written.seq, 'and was not applied again');
  await waitFor('the ttl key expired', () => !reader.has('short'), 10_000);
  const after = Date.now() - ttlFrom;
  assert.ok(after >= 1900, `expired ${after} ms after it was written, before its 2 s`);
  // The owner beats the new run within peerTimeout (3 s) of the restart: it keeps its key.
  await waitFor('the owner live on the new run', () => owner.status === 'live', 10_000);
  const from = Date.now();
  await waitFor('more than a peerTimeout later', () => Date.now() - from > 3500, 5000);
  assert.equal(reader.get('eph/lock'), 'mine', 'the owner that came back keeps its key');
});
