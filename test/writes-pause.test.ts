/**
 * Item 15: a timeout means the write was not applied, or says that it might have been. Topology:
 * an in-process Forwarder on an ephemeral port triple; a writer Peer in its own process
 * (test/fixtures/writer-child.ts, started as one `node --import tsx` process so SIGSTOP stops
 * all of it) writing `w/0`, `w/1`, … continuously; an in-process observer Peer on `w/` that
 * tells which writes the forwarder applied.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TimeoutError } from '../src/index.ts';
import { FakeForwarder } from './fake-forwarder.ts';
import { childPeer, forwarder, peer, readyPeer, waitFor, within, WRITER_CHILD } from './helpers.ts';

interface Report {
  ok: number[];
  timeouts: Array<{ i: number; maybeApplied: unknown }>;
  errors: Record<string, number>;
}

test('a writer paused past its write timeout never reports "not applied" for a write the forwarder applied', async (t) => {
  const fwd = await forwarder(t);
  const observer = await readyPeer(t, fwd.endpoint, { subtree: 'w/' });
  const writeTimeout = 500;
  const writer = await childPeer(t, fwd.endpoint, { writeTimeout, writeRetryInterval: 200 }, WRITER_CHILD);
  // Bounded: at most 40,000 writes, 2,000 pending at a time.
  writer.child.stdin!.write('run 40000 2000\n');
  await waitFor('writes flowing', () => observer.size >= 3000, 15_000);
  writer.child.kill('SIGSTOP');
  // The pause is this test's input (a stopped process, a long GC): past the write timeout.
  const stoppedAt = Date.now();
  await waitFor('a pause of three write timeouts', () => Date.now() - stoppedAt > 3 * writeTimeout);
  const atResume = observer.size;
  writer.child.kill('SIGCONT');
  await waitFor('writes flowing again', () => observer.size >= Math.min(atResume + 3000, 40_000), 15_000);
  const report = await writer.ask('stop', (o) => o.report as Report | undefined, 20_000);
  // Everything the forwarder applied is in the observer once it reads its own later write.
  await observer.set('w/end', true);
  const applied = (i: number): boolean => observer.has(`w/${i}`);
  const wrong = report.timeouts.filter((x) => x.maybeApplied !== true && applied(x.i));
  assert.equal(
    wrong.length,
    0,
    `${wrong.length} of ${report.timeouts.length} timeouts said (or implied) "not applied" for applied writes, e.g. w/${wrong[0]?.i}`,
  );
  assert.deepEqual(report.errors, {});
  for (const x of report.timeouts) assert.equal(typeof x.maybeApplied, 'boolean', 'every TimeoutError says maybeApplied');
  const lost = report.ok.filter((i) => !applied(i));
  assert.equal(lost.length, 0, `acknowledged writes missing at the forwarder: ${lost.slice(0, 5).join(', ')}`);
  t.diagnostic(`${report.ok.length} acknowledged, ${report.timeouts.length} timeouts (${report.timeouts.filter((x) => x.maybeApplied === true).length} maybe applied)`);
});

test('a timeout says maybeApplied: false for a write never sent, true for one sent and never answered', async (t) => {
  // Nothing listens: the peer never learns what the server is, so the write never leaves it.
  const gone = await forwarder(t);
  const port = gone.port;
  await gone.close();
  const lonely = peer(t, `tcp://127.0.0.1:${port}`, { writeTimeout: 100 });
  await assert.rejects(lonely.set('never/sent', 1), (err: TimeoutError) => {
    assert.ok(err instanceof TimeoutError);
    assert.equal(err.maybeApplied, false);
    assert.match(err.message, /never sent/);
    return true;
  });
  // A scripted forwarder that takes the write and never answers it.
  const fake = await FakeForwarder.start(t);
  const p = peer(t, 'unused', { server: fake.endpoints, writeTimeout: 100 });
  await fake.snapshotEnd((await fake.next('ICANHAZ?'))[0]!, 0);
  await within('ready', p.ready());
  const write = p.set('sent/unanswered', 1);
  await fake.next('KVWRITE');
  await assert.rejects(write, (err: TimeoutError) => {
    assert.ok(err instanceof TimeoutError);
    assert.equal(err.code, 'CLONEKV_TIMEOUT');
    assert.equal(err.maybeApplied, true);
    assert.match(err.message, /retry may apply it twice/);
    return true;
  });
});
