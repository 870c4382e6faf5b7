/**
 * Issue 9: a peer that knows a pair member's term sends it back in its resume request
 * (ICANHAZ?'s third frame, next to since and epoch); the parser reads it, optional, and refuses
 * a bad one.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseResumeRequest, snapshotRequestFrames } from '../src/protocol/message.ts';

test('the resume request carries term=<n> when known; parsed back, optional, a bad one refused', () => {
  const withTerm = snapshotRequestFrames(Buffer.from('a/'), { since: 12, epoch: 'e1', term: 3 });
  assert.equal(withTerm.length, 3);
  assert.equal(withTerm[2]!.toString(), 'since=12\nepoch=e1\nterm=3\n');
  assert.deepEqual(parseResumeRequest(withTerm[2]!), { since: 12, epoch: 'e1', term: 3 });
  const without = snapshotRequestFrames(Buffer.from('a/'), { since: 12, epoch: 'e1' });
  assert.equal(without[2]!.toString(), 'since=12\nepoch=e1\n');
  assert.deepEqual(parseResumeRequest(without[2]!), { since: 12, epoch: 'e1' });
  for (const bad of ['-1', 'x', '01', '99999999999999999']) {
    assert.equal(parseResumeRequest(Buffer.from(`since=12\nepoch=e1\nterm=${bad}\n`)), undefined, `term=${bad}`);
  }
});
