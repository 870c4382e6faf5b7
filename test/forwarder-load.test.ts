/**
 * `Forwarder.load` checks what a peer's write is checked for, and is all or nothing (issue 7,
 * item 17). Topology: one Forwarder and a full-tree clonekv Peer that reads what was loaded.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { forwarder, readyPeer } from './helpers.ts';

test('a bad entry anywhere in a load throws naming it, and nothing is loaded', async (t) => {
  const fwd = await forwarder(t, { maxValueBytes: 1024 });
  const cases: Array<{ entry: [string, unknown]; code: string; names: RegExp }> = [
    { entry: ['$peers/abc', 1], code: 'CLONEKV_INVALID_KEY', names: /\$peers\/abc.*reserved/ },
    { entry: ['KTHXBAI', 1], code: 'CLONEKV_INVALID_KEY', names: /KTHXBAI.*reserved/ },
    { entry: ['HUGZ', 1], code: 'CLONEKV_INVALID_KEY', names: /HUGZ/ },
    { entry: ['', 1], code: 'CLONEKV_INVALID_KEY', names: /""/ },
    { entry: ['k'.repeat(256), 1], code: 'CLONEKV_INVALID_KEY', names: /256/ },
    { entry: ['big', 'x'.repeat(2000)], code: 'CLONEKV_INVALID_VALUE', names: /"big".*maxValueBytes/ },
    { entry: ['undef', undefined], code: 'CLONEKV_INVALID_VALUE', names: /"undef"/ },
    { entry: ['nested', { a: undefined }], code: 'CLONEKV_INVALID_VALUE', names: /"nested"/ },
  ];
  for (const c of cases) {
    const before = fwd.sequence;
    const entries: Array<[string, unknown]> = [['good/1', 1], ['good/2', 2], c.entry, ['good/3', 3]];
    await assert.rejects(fwd.load(entries), (err: Error & { code?: string }) => {
      assert.equal(err.code, c.code, err.message);
      assert.match(err.message, c.names);
      return true;
    });
    assert.equal(fwd.sequence, before, `nothing applied for ${c.entry[0].slice(0, 20)}`);
    assert.equal(fwd.size, 0);
  }
  assert.equal(await fwd.load([['good/1', 1], ['good/2', { b: [2] }]]), 2);
  const p = await readyPeer(t, fwd.endpoint, { presence: false });
  assert.equal(p.get('good/1'), 1);
  assert.deepEqual(p.get('good/2'), { b: [2] });
});
