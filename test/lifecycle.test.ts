/**
 * Lifecycle and options. Topology: in-process Forwarders on ephemeral port triples and Peers.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Forwarder, InvalidOptionError, Peer } from '../src/index.ts';
import { forwarder, readyPeer, waitFor, within } from './helpers.ts';

/** Starts a forwarder on a fixed port above the kernel's ephemeral range (32768-60999), so no
 * parallel test that binds ephemeral ports can take it between close and rebind. */
async function startAboveEphemeralRange(): Promise<Forwarder> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await Forwarder.start({ port: 61_000 + Math.floor(Math.random() * 4000) });
    } catch (err) {
      if (attempt > 20) throw err;
    }
  }
}

test('close() is idempotent, closed() resolves, and the ports are released', async (t) => {
  const fwd = await startAboveEphemeralRange();
  t.after(() => fwd.close()); // a failed assertion must not leave the process running
  const port = fwd.port;
  const p = new Peer({ server: fwd.endpoint });
  t.after(() => p.close());
  await within('peer ready', p.ready());
  await Promise.all([p.close(), p.close()]);
  await p.closed();
  assert.equal(p.status, 'closed');
  await fwd.close();
  await fwd.close();
  await fwd.closed();
  // The same triple can be bound again at once.
  const again = await Forwarder.start({ port });
  t.after(() => again.close());
  assert.equal(again.port, port);
  await again.close();
});

test('await using closes peers and forwarders', async () => {
  let endpoint = '';
  let peerRef: Peer | undefined;
  {
    await using fwd = await Forwarder.start({ port: 0 });
    endpoint = fwd.endpoint;
    await using p = new Peer({ server: endpoint });
    peerRef = p;
    await within('peer ready', p.ready());
  }
  assert.equal(peerRef.status, 'closed');
  await assert.rejects(peerRef.set('x', 1), { code: 'CLONEKV_CLOSED' });
});

test('closing a peer rejects pending writes and ready(), and ends watches', async (t) => {
  const fwd = await forwarder(t);
  const port = fwd.port;
  await fwd.close();
  const p = new Peer({ server: `tcp://127.0.0.1:${port}`, writeTimeout: 60_000 });
  t.after(() => p.close());
  const ready = p.ready();
  const write = p.set('never', 1);
  const watch = (async () => {
    const seen: unknown[] = [];
    for await (const e of p.watch()) seen.push(e);
    return seen;
  })();
  await p.close();
  await assert.rejects(ready, { code: 'CLONEKV_CLOSED' });
  await assert.rejects(write, { code: 'CLONEKV_CLOSED' });
  assert.deepEqual(await within('watch ends on close', watch), []);
});

test('a live peer ends its watches on close', async (t) => {
  const fwd = await forwarder(t);
  const p = await readyPeer(t, fwd.endpoint);
  await p.set('a', 1);
  const got: string[] = [];
  const watching = (async () => {
    for await (const e of p.watch()) got.push(`${e.key}=${String(e.value)}:${e.isUpdate}`);
  })();
  // The watch is running (it replayed the current value) when the peer closes under it.
  await waitFor('the replay of a', () => got.length > 0);
  await p.close();
  await within('watch to end', watching);
  assert.deepEqual(got, ['a=1:false'], 'the replay and nothing after it');
});

test('bad options are named in the error', async () => {
  assert.throws(() => new Peer({ server: 'http://nope' }), (e: InvalidOptionError) => e.option === 'server' && e.code === 'CLONEKV_INVALID_OPTION');
  assert.throws(() => new Peer({ silenceTimeout: -1 }), (e: InvalidOptionError) => e.option === 'silenceTimeout');
  assert.throws(() => new Peer({ subtree: 'x'.repeat(300) }), (e: InvalidOptionError) => e.option === 'subtree');
  // @ts-expect-error: a misspelt option is caught at run time too
  assert.throws(() => new Peer({ silenceTimout: 5 }), (e: InvalidOptionError) => e.option === 'silenceTimout');
  await assert.rejects(Forwarder.start({ port: 70000 }), (e: InvalidOptionError) => e.option === 'port');
  await assert.rejects(Forwarder.start({ port: 0, heartbeatInterval: 0 }), (e: InvalidOptionError) => e.option === 'heartbeatInterval');
  await assert.rejects(Forwarder.start({ port: 0, publisherHwm: { send: -1 } }), (e: InvalidOptionError) => e.option === 'publisherHwm.send');
});

test('binding a port triple that is taken fails with a transport error naming it', async (t) => {
  const fwd = await forwarder(t);
  await assert.rejects(Forwarder.start({ port: fwd.port }), (e: Error & { code?: string }) => {
    assert.equal(e.code, 'CLONEKV_TRANSPORT');
    assert.match(e.message, new RegExp(`${fwd.port}`));
    assert.match(e.message, /in use/);
    assert.match(e.message, /another process|--port/);
    return true;
  });
});
