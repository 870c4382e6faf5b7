/**
 * A reconnect never hides a missed update (issue 7, item 2). When the last subscriber of a
 * prefix drops and comes back, the forwarder must not restart that prefix's head: updates
 * written meanwhile would then look as if they never happened (`prev` and `heads` agreeing
 * with what the peer holds), and the peer would stay `live` without them.
 *
 * Topology:
 * ```
 *   writer Peer (subtree "w/", so it does not hold "sub/" or the full tree) ──► Forwarder
 *   subtree Peer "sub/"  SUB ──► TcpProxy A ──► Forwarder XPUB :P+1   (DEALER direct to :P)
 *   full-tree Peer       SUB ──► TcpProxy B ──► Forwarder XPUB :P+1   (DEALER direct to :P)
 *   checker Peer (fresh, direct): the forwarder's map, versions included, at the end
 * ```
 * Both proxies are cut while the writer goes on (until 200 more writes are acknowledged), then
 * restored; the writer writes each key once, so a missed update stays missed.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import type { Forwarder, Peer } from '../src/index.ts';
import { forwarder, peer, readyPeer, waitFor, within } from './helpers.ts';
import { tcpProxy } from './tcp-proxy.ts';

function versions(p: Peer, prefix = ''): Map<string, [unknown, number]> {
  return new Map([...p.entries(prefix)].map((e) => [e.key, [e.value, e.version]]));
}

async function proxiedPeer(t: TestContext, fwd: Forwarder, subtree: string): Promise<{ peer: Peer; cut(): void; restore(): void }> {
  const proxy = await tcpProxy(t, fwd.endpoints.publisher);
  const p = peer(t, '', { server: { ...fwd.endpoints, publisher: proxy.endpoint }, subtree, name: `via-proxy${subtree}` });
  await within(`peer ${subtree || '(full tree)'} ready`, p.ready());
  return { peer: p, cut: () => proxy.cut(), restore: () => proxy.restore() };
}

test('a peer whose subscription drops for a while ends with every update written meanwhile', async (t) => {
  const fwd = await forwarder(t, { heartbeatInterval: 100 });
  const writer = await readyPeer(t, fwd.endpoint, { subtree: 'w/', name: 'writer' });
  const sub = await proxiedPeer(t, fwd, 'sub/');
  const full = await proxiedPeer(t, fwd, '');

  let written = 0;
  let stop = false;
  const writing = (async () => {
    while (!stop) {
      await writer.set(`sub/${written}`, written);
      written++;
    }
  })();
  t.after(async () => {
    stop = true;
    await writing.catch(() => {});
  });

  await waitFor('100 writes before the cut', () => written >= 100);
  const subscribed = fwd.stats().subscriptions;
  sub.cut();
  full.cut();
  // The forwarder sees both prefixes lose their only subscriber.
  await waitFor('the unsubscriptions', () => fwd.stats().subscriptions <= subscribed - 2);
  const atCut = written;
  await waitFor('200 writes while cut off', () => written >= atCut + 200);
  sub.restore();
  full.restore();
  await waitFor('the resubscriptions', () => fwd.stats().subscriptions >= subscribed);
  const atRestore = written;
  await waitFor('20 writes after the restore', () => written >= atRestore + 20);
  stop = true;
  await writing;

  const checker = await readyPeer(t, fwd.endpoint, { name: 'checker', presence: false });
  const expected = versions(checker, 'sub/');
  assert.equal(expected.size, written, 'the forwarder holds every write');
  for (const [name, p] of [['subtree', sub.peer], ['full-tree', full.peer]] as const) {
    await waitFor(
      `the ${name} peer to hold every update (has ${[...p.entries('sub/')].length} of ${written})`,
      () => p.status === 'live' && [...p.entries('sub/')].length === written && p.version(`sub/${written - 1}`) === checker.version(`sub/${written - 1}`),
      10_000,
    );
    assert.deepEqual(versions(p, 'sub/'), expected, `the ${name} peer's map equals the forwarder's, versions included`);
    const s = p.stats();
    assert.ok(s.gaps + s.resyncs > 0, `the ${name} peer noticed the miss (gaps ${s.gaps}, resyncs ${s.resyncs})`);
  }
});
