/**
 * Convergence under chaos (issue 7, "A convergence test of your own"), short form; the long form
 * is `npx tsx bench/convergence.ts [--seed N] [--seconds S]`.
 *
 * Topology (see test/fixtures/convergence-run.ts): a forwarder process; four peers in their
 * own processes (full tree, a/, a/b/, c/), two of them through cuttable TCP proxies, watching
 * different subtrees; writers doing sets, deletes, conditional writes and ttl writes; random
 * SIGSTOP/SIGCONT, SIGKILL and restart, proxy cuts, and a burst past small high-water marks.
 * At the end: every live peer's map equals the forwarder's (versions included), every watch's
 * events replay to its peer's map, every acknowledged write is accounted for, no sequence is
 * acknowledged twice, and no write rejected without `maybeApplied` was applied.
 *
 * Seeded: `CONVERGENCE_SEED=N npx tsx --test --test-timeout=60000 test/convergence.test.ts`
 * replays the plan of run N (the process timing differs from run to run).
 *
 * Failures seen on the code this test was written against (main at bc2845a), to be fixed by
 * other items of issue 7. A seed replays the plan, not the timing, so a seed may not fail twice
 * the same way; these failed in runs of `npx tsx bench/convergence.ts --short --seed N`:
 *  - items 15 and 7, in most runs (seeds 100, 102, 201, 300, 303, 305-307; long form seed 7):
 *    "write #… was rejected with CLONEKV_TIMEOUT (no maybeApplied), yet it was applied". A
 *    writer behind a cut proxy times out writes the forwarder sequenced: the acknowledgement
 *    was lost with the connection or went to a DEALER that a resync replaced (item 15: the
 *    outcome is unknown, the error must say maybeApplied), or the write was acknowledged but not
 *    yet visible locally because only the publisher was cut (item 7, keys in the subtree).
 *  - item 2, in about half the runs (seeds 1, 200, 202, 304, 400, 403, 600, 601): "peer a#1
 *    (subtree 'a/') differs from the forwarder" / "peer c#3 (subtree 'c/') differs …", with
 *    status live and no gap.
 *    Those peers are the only subscribers of a/ and c/ and reach the forwarder through the
 *    proxies: after a cut the forwarder restarts that prefix's head at 0, and what was written
 *    meanwhile is never noticed.
 *  - once (seed 202, three runs in one process): the forwarder aborted on a libzmq assertion
 *    in its XPUB's subscription trie ("Assertion failed: it.new_min == it.new_max
 *    (generic_mtrie_impl.hpp:314)", then "it.node->_live_nodes > 1 (…:451)"), not an item of
 *    issue 7. Like libzmq issue 2942, asymmetric subscribe/unsubscribe messages (each sync
 *    attempt subscribes and unsubscribes a join topic) may be the trigger. The forwarder now
 *    runs in its own process here, so such a crash fails the test with the seed.
 * Control runs separate them: with no peer behind the proxies (`--direct`) seeds 700-702
 * passed; with 20 s write timeouts (`--write-timeout 20000`) only the item 2 failures remained
 * (seeds 600, 601); with both, seeds 500-503 passed: the harness itself is not what fails.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkConvergence, type RunRecord } from './fixtures/convergence-check.ts';
import type { ReportedEvent, ReportedState } from './fixtures/convergence-peer.ts';
import { SHORT_FORM, runConvergence, seedFromEnv } from './fixtures/convergence-run.ts';

test('peers converge on the forwarder under pauses, kills, cuts and bursts', { timeout: 60_000 }, async (t) => {
  const seed = seedFromEnv();
  t.diagnostic(`seed ${seed}`);
  // Also at once, in case the whole process dies before the runner reports anything.
  process.stderr.write(`convergence: seed ${seed} (rerun: CONVERGENCE_SEED=${seed} npx tsx --test --test-timeout=60000 test/convergence.test.ts)\n`);
  const r = await runConvergence({ seed, ...SHORT_FORM });
  t.diagnostic(JSON.stringify(r.figures));
  if (r.failures.length > 0) {
    const rerun =
      `rerun: CONVERGENCE_SEED=${seed} npx tsx --test --test-timeout=60000 test/convergence.test.ts` +
      ` (or: npx tsx bench/convergence.ts --short --seed ${seed})`;
    assert.fail(
      `convergence failed with seed ${seed}; ${rerun}\n` +
        `${r.failures.length} failure(s):\n  ${r.failures.slice(0, 30).join('\n  ')}\n` +
        `timeline:\n  ${r.timeline.join('\n  ')}`,
    );
  }
  // The chaos did what it is there for: the run wrote, acknowledged, and made peers recover.
  assert.ok(Number(r.figures.acks) > 100, `writes were acknowledged (${r.figures.acks})`);
  assert.ok(Number(r.figures.peerResyncs) + Number(r.figures.peerGaps) > 0, 'some live peer had to recover from missed updates');
});

// ---- the checks themselves can fail (no sockets) ---------------------------------------------

/** A small consistent run: a/1 set at 1, a/2 set at 2 then deleted at 3, b/1 set at 4. */
function consistentRecord(): RunRecord {
  const ev = (k: string, op: 'put' | 'delete', ver: number, v?: unknown): ReportedEvent => ({ t: 'ev', w: 0, k, op, ver, upd: true, rs: false, ...(op === 'put' ? { v } : {}) });
  const state = (map: Array<[string, unknown, number]>, sequence: number): ReportedState => ({
    t: 'state', id: 1, status: 'live', sequence, map, inflight: 0, stats: {}, watchErrors: [], errors: 0,
  });
  const truth: Array<[string, unknown, number]> = [['a/1', { n: 1 }, 1], ['b/1', { n: 4 }, 4]];
  return {
    truth,
    forwarderSequence: 4,
    peers: [
      { label: 'full#1', subtree: '', watches: [''], events: [[ev('a/1', 'put', 1, { n: 1 }), ev('a/2', 'put', 2, { n: 2 }), ev('a/2', 'delete', 3), ev('b/1', 'put', 4, { n: 4 })]], state: state(truth.map((e) => [...e]), 4) },
      { label: 'a#1', subtree: 'a/', watches: ['a/'], events: [[ev('a/1', 'put', 1, { n: 1 })]], state: state([['a/1', { n: 1 }, 1]], 3) },
    ],
    ops: new Map([
      [1, { n: 1, t: 'set', k: 'a/1', v: { n: 1 }, by: 'full#1' }],
      [2, { n: 2, t: 'set', k: 'a/2', v: { n: 2 }, ttl: 1, by: 'full#1' }],
      [3, { n: 3, t: 'del', k: 'a/2', by: 'a#1' }],
      [4, { n: 4, t: 'cas', k: 'b/1', v: { n: 4 }, by: 'a#1' }],
      [5, { n: 5, t: 'cas', k: 'b/1', v: { n: 5 }, by: 'full#1' }],
    ]),
    acks: [{ n: 1, seq: 1 }, { n: 2, seq: 2 }, { n: 3, seq: 3 }, { n: 4, seq: 4 }],
    rejections: [{ n: 5, code: 'CLONEKV_CONFLICT', message: 'lost' }],
    history: [
      { seq: 1, key: 'a/1', op: 'put', value: { n: 1 } },
      { seq: 2, key: 'a/2', op: 'put', value: { n: 2 } },
      { seq: 3, key: 'a/2', op: 'delete' },
      { seq: 4, key: 'b/1', op: 'put', value: { n: 4 } },
    ],
    deletedAt: new Map([['a/2', 3]]),
    unseen: [],
  };
}

test('the convergence checks pass a consistent run and catch each kind of broken promise', () => {
  assert.deepEqual(checkConvergence(consistentRecord()), { failures: [], unverified: 0 });
  const broken: Array<[string, (r: RunRecord) => void, RegExp]> = [
    ['a peer with a stale version', (r) => (r.peers[1]!.state.map[0]![2] = 0), /a#1 .*differs from the forwarder/],
    ['a peer missing a key', (r) => r.peers[0]!.state.map.pop(), /full#1 .*differs.*b\/1/],
    ['a peer not live', (r) => (r.peers[0]!.state.status = 'stale'), /status stale/],
    ['a full-tree peer behind', (r) => (r.peers[0]!.state.sequence = 3), /sequence 3, the forwarder's is 4/],
    ['a watch that missed a delete', (r) => r.peers[0]!.events[0]!.splice(2, 1), /watch '' replayed differs.*a\/2/],
    ['a corrupted acknowledgement', (r) => (r.acks[3]!.seq = 5), /write #4 .*acknowledged at 5: the key's final version is 4/],
    ['a sequence acknowledged twice', (r) => r.acks.push({ n: 5, seq: 4 }), /sequence 4 acknowledged twice/],
    ['an acknowledged write that is not the one published', (r) => (r.history[0]!.value = { n: 9 }), /write #1 .*published at 1 was put a\/1/],
    ['an acknowledged put lost without a delete', (r) => r.deletedAt.clear(), /write #2 .*absent at the end, and no delete/],
    [
      'an acknowledged delete still present',
      (r) => {
        r.ops.set(3, { n: 3, t: 'del', k: 'a/1', by: 'a#1' });
        r.acks[2]!.seq = 1;
      },
      /write #3 .*a delete, but the key is present/,
    ],
    ['a refused write that was applied', (r) => r.history.push({ seq: 5, key: 'b/1', op: 'put', value: { n: 5 } }), /write #5 .*rejected with CLONEKV_CONFLICT.*applied/],
  ];
  for (const [what, tamper, expected] of broken) {
    const r = consistentRecord();
    tamper(r);
    const { failures } = checkConvergence(r);
    assert.ok(failures.some((f) => expected.test(f)), `${what}: expected a failure matching ${expected}, got ${JSON.stringify(failures)}`);
  }
  // A refused write whose outcome is unknown may be seen.
  const r = consistentRecord();
  r.rejections[0]!.maybeApplied = true;
  r.history.push({ seq: 5, key: 'b/1', op: 'put', value: { n: 5 } });
  assert.deepEqual(checkConvergence(r).failures.filter((f) => /rejected/.test(f)), []);
  // A put and its delete both sequenced while the observer resynced cannot be checked: counted.
  const hidden = consistentRecord();
  hidden.deletedAt.clear();
  hidden.unseen.push([1, 3]);
  assert.deepEqual(checkConvergence(hidden), { failures: [], unverified: 1 });
});
