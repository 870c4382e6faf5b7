/**
 * `clonekv stats` and `clonekv peers` given the two members of a pair (issue 9): each server's
 * role and replication lag, each asked directly, so the passive one (which serves no snapshot and
 * could not be joined) answers too; a member that does not answer is named and the command exits 1.
 *
 * Topology: two `clonekv serve --primary|--backup --memory` child processes (pair-fixture.ts),
 * one in-process peer on both, the CLI in child processes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readyPeer, runCli } from './helpers.ts';
import { startPair } from './pair-fixture.ts';

test('clonekv stats and peers show the role and replication lag of each member of a pair', async (t) => {
  const pair = await startPair(t, { durable: false });
  const list = pair.servers.join(',');
  const p = await readyPeer(t, '', { server: pair.servers, name: 'member' });
  await p.set('k', 1);
  await pair.settled(pair.primary);

  const json = await runCli(['stats', '--json', '--server', list]);
  assert.equal(json.code, 0, json.stderr);
  const lines = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
  assert.equal(lines.length, 2, json.stdout);
  const [primary, backup] = lines as [Record<string, any>, Record<string, any>];
  assert.equal(primary.server, pair.primary.endpoint);
  assert.equal(primary.role, 'active');
  assert.equal(primary.pair.configured, 'primary');
  assert.equal(primary.pair.replication.state, 'replicating');
  assert.equal(primary.pair.replication.lag, 0);
  assert.equal(backup.server, pair.backup.endpoint);
  assert.equal(backup.role, 'passive');
  assert.equal(backup.pair.configured, 'backup');
  assert.equal(backup.pair.replication.lag, 0);
  assert.equal(backup.pair.term, primary.pair.term);
  assert.equal(backup.sequence, primary.sequence, 'the backup holds what the primary sequenced');

  // Text, the list from CLONEKV_SERVER; the passive alone answers too.
  const text = await runCli(['stats'], { CLONEKV_SERVER: list });
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, new RegExp(`^server ${pair.primary.endpoint}\nrole active \\(primary\\), term \\d+\nreplication replicating, sequence \\d+, lag 0 `, 'm'));
  assert.match(text.stdout, new RegExp(`^server ${pair.backup.endpoint}\nrole passive \\(backup\\), term \\d+\nreplication \\w+, sequence \\d+, lag 0 `, 'm'));
  const passive = await runCli(['stats', '--json', '--server', pair.backup.endpoint]);
  assert.equal(passive.code, 0, passive.stderr);
  assert.equal((JSON.parse(passive.stdout) as { role: string }).role, 'passive');

  const peers = await runCli(['peers', '--json', '--server', list]);
  assert.equal(peers.code, 0, peers.stderr);
  const listed = JSON.parse(peers.stdout) as { servers: Array<Record<string, any>>; peers: Array<{ id: string }> };
  assert.deepEqual(listed.servers.map((s) => [s.server, s.role, s.replication.lag]), [[pair.primary.endpoint, 'active', 0], [pair.backup.endpoint, 'passive', 0]]);
  assert.deepEqual(listed.peers.map((x) => x.id), [p.id]);
  const peersText = await runCli(['peers', '--server', list]);
  assert.equal(peersText.code, 0, peersText.stderr);
  const [l1, l2, l3] = peersText.stdout.trim().split('\n');
  assert.match(l1!, new RegExp(`^server ${pair.primary.endpoint}\tactive \\(primary\\), term \\d+\treplicating, .*lag 0 `));
  assert.match(l2!, new RegExp(`^server ${pair.backup.endpoint}\tpassive \\(backup\\), term \\d+\t`));
  assert.match(l3!, new RegExp(`^${p.id}\tmember\t`));

  // A member down: named, the other still shown (its backup now absent), exit 1.
  await pair.backup.kill();
  const down = await runCli(['stats', '--json', '--timeout', '1000', '--server', list]);
  assert.equal(down.code, 1);
  const [up, gone] = down.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>) as [Record<string, any>, Record<string, any>];
  assert.equal(up.role, 'active');
  assert.equal(gone.server, pair.backup.endpoint);
  assert.match(gone.error, /no answer/);
});
