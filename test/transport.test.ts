/**
 * Transport errors: every zeromq failure to connect, bind or configure a socket comes out as a
 * ClonekvError with code CLONEKV_TRANSPORT that names the endpoint, never as a raw zeromq error.
 * Topology: sockets made by src/transport on tcp://127.0.0.1; a node:net server holding a port;
 * an in-process Forwarder and Peer for the public constructors.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:net';
import { test, type TestContext } from 'node:test';
import { ClonekvError, Forwarder, Peer } from '../src/index.ts';
import { bindForwarderSockets, connectDealer, connectCollector, connectSubscriber, releaseForwarderSockets } from '../src/transport/sockets.ts';

const HWM = { send: 10, receive: 10 };

/** Checks that `fn` throws a CLONEKV_TRANSPORT ClonekvError whose message matches every `parts`. */
function isTransportError(...parts: RegExp[]) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof ClonekvError, `a ClonekvError, not ${String(e)}`);
    assert.equal(e.code, 'CLONEKV_TRANSPORT');
    for (const re of parts) assert.match(e.message, re);
    return true;
  };
}

const escape = (s: string): RegExp => new RegExp(s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));

test('connecting to an endpoint that cannot work throws CLONEKV_TRANSPORT naming it', () => {
  const connects = {
    subscriber: (ep: string) => connectSubscriber(ep, HWM),
    dealer: (ep: string) => connectDealer(ep, 'test-id', HWM),
    publisher: (ep: string) => connectCollector(ep, HWM),
  };
  const cases: Array<[string, RegExp]> = [
    ['tcp://*:5556', /"\*"/], // zeromq: raw EINVAL
    ['tcp://:0', /host is missing/], // zeromq accepts it and connects to nothing
    ['tcp://127.0.0.1:0', /port/], // same
    ['tcp://127.0.0.1', /tcp:\/\/HOST:PORT/], // zeromq: raw EINVAL
    ['bogus://x', /not supported/i], // zeromq: raw EPROTONOSUPPORT
  ];
  for (const [name, connect] of Object.entries(connects)) {
    for (const [endpoint, why] of cases) {
      assert.throws(() => connect(endpoint), isTransportError(escape(JSON.stringify(endpoint)), why, /tcp:\/\/HOST:PORT/), `${name} ${endpoint}`);
    }
  }
});

test('a zeromq error is kept as the cause', () => {
  assert.throws(
    () => connectDealer('bogus://x', 'test-id', HWM),
    (e: ClonekvError) => (e.cause as { code?: string } | undefined)?.code === 'EPROTONOSUPPORT',
  );
  // A socket option zeromq refuses is a transport error naming the option. (zeromq's own
  // constructor would leak the half-built socket and crash the process at exit: this file
  // exiting cleanly is part of the check.)
  assert.throws(
    () => connectDealer('tcp://127.0.0.1:5556', 'x'.repeat(300), HWM),
    (e: unknown) => isTransportError(/snapshot \(DEALER\) socket/, /routingId = a 300-byte string/)(e) && (e as ClonekvError).cause !== undefined,
  );
  assert.throws(() => connectSubscriber('tcp://127.0.0.1:5556', { send: 0, receive: -1 }), isTransportError(/receiveHighWaterMark = -1/));
});

test('a good endpoint still connects (no server needed)', (t) => {
  const sub = connectSubscriber('tcp://127.0.0.1:5556', HWM);
  t.after(() => sub.close());
  assert.equal(sub.closed, false);
});

/** Listens on 127.0.0.1:port with node:net; rejects if the port is taken. */
async function listenOn(port: number): Promise<Server> {
  const server = createServer();
  server.listen(port, '127.0.0.1');
  const [event] = (await Promise.race([once(server, 'listening').then(() => ['listening']), once(server, 'error')])) as [unknown];
  if (event !== 'listening') throw event;
  return server;
}

const closeServer = (s: Server): Promise<void> => new Promise((r) => s.close(() => r()));

/**
 * A port P above the kernel's ephemeral range (so no parallel test's ephemeral bind takes it)
 * whose triple was free a moment ago, with P+1 now held by a node:net listener, closed after
 * the test.
 */
async function tripleWithMiddleTaken(t: TestContext): Promise<{ port: number; holder: Server }> {
  for (let attempt = 0; ; attempt++) {
    const port = 61_000 + Math.floor(Math.random() * 4000);
    const held: Server[] = [];
    try {
      for (const p of [port, port + 1, port + 2]) held.push(await listenOn(p));
    } catch (err) {
      await Promise.all(held.map(closeServer));
      if (attempt > 20) throw err;
      continue;
    }
    const [first, holder, third] = held as [Server, Server, Server];
    await Promise.all([closeServer(first), closeServer(third)]);
    t.after(() => (holder.listening ? closeServer(holder) : undefined));
    return { port, holder };
  }
}

test('binding a taken port says the port is in use, and releases the ports it had bound', async (t) => {
  const { port, holder } = await tripleWithMiddleTaken(t);
  // P+1 is taken: the ROUTER binds P, then the XPUB fails on P+1.
  await assert.rejects(
    bindForwarderSockets('127.0.0.1', port, { router: HWM, publisher: HWM, collector: HWM }),
    (e: unknown) => isTransportError(escape(`${port}`), /in use/, /--port/)(e) && (e as ClonekvError).cause !== undefined,
  );
  await closeServer(holder);
  // The failed attempt released P before it threw: the whole triple binds again at once.
  const again = await bindForwarderSockets('127.0.0.1', port, { router: HWM, publisher: HWM, collector: HWM });
  t.after(() => releaseForwarderSockets(again));
  assert.equal(again.port, port);
});

test('binding an address that is not this machine names it', async () => {
  await assert.rejects(Forwarder.start({ port: 0, bind: '192.0.2.1' }), isTransportError(/192\.0\.2\.1/, /--bind/));
});

test('a Peer given tcp://*:P is refused at once: the option when given as one server, the endpoint when given as three', () => {
  assert.throws(() => new Peer({ server: 'tcp://*:5556' }), (e: unknown) => e instanceof ClonekvError && e.code === 'CLONEKV_INVALID_OPTION' && /tcp:\/\/\*:5556/.test(e.message));
  const server = { snapshot: 'tcp://127.0.0.1:5556', publisher: 'tcp://*:5557', collector: 'tcp://127.0.0.1:5558' };
  assert.throws(() => new Peer({ server }), isTransportError(/tcp:\/\/\*:5557/));
});

test('every subscription a peer SUB sends reaches the XPUB, however many (no send mark drops them)', async (t) => {
  // Topology: bindForwarderSockets (XPUB on P+1) ◄── connectSubscriber with 5,000 topics. With
  // libzmq's default send mark of 1,000 on the SUB, about 1,000 arrived and the rest were dropped;
  // a dropped subscribe whose unsubscribe arrives later trips an assertion in the XPUB.
  const sockets = await bindForwarderSockets('127.0.0.1', 0, {
    router: { send: 1000, receive: 1000 },
    publisher: { send: 1000, receive: 100_000 },
    collector: { send: 1000, receive: 1000 },
  });
  t.after(() => releaseForwarderSockets(sockets));
  const sub = connectSubscriber(`tcp://127.0.0.1:${sockets.port + 1}`, HWM);
  t.after(() => sub.close());
  const N = 5000;
  for (let i = 0; i < N; i++) sub.subscribe(`topic/${i}`);
  const seen = new Set<string>();
  sockets.publisher.receiveTimeout = 2000; // a receive with nothing more to come rejects after 2 s
  try {
    while (seen.size < N) {
      const [frame] = await sockets.publisher.receive();
      if (frame && frame[0] === 1) seen.add(frame.subarray(1).toString());
    }
  } catch {
    // nothing more arrived: count what did
  }
  assert.equal(seen.size, N);
});
