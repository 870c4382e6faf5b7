/**
 * `clonekv serve --primary|--backup`: flags, the --json line, role changes on stderr, and a
 * SIGKILL of the active process: every write it acknowledged is on the backup, which takes over.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { readyPeer, runCli, spawnCli, waitFor, within } from './helpers.ts';
import { pairPorts } from './pair-helpers.ts';
import { EMPTY, rawDealer } from './raw-sockets.ts';

test('serve --primary alone: the JSON line names role, term and state endpoint; stderr says it became active and that its backup is absent', async (t) => {
  const ports = await pairPorts();
  const cli = spawnCli(t, ['serve', '--primary', '--memory', '--port', '0', '--state-port', String(ports.primary), '--partner', `tcp://127.0.0.1:${ports.backup}`, '--partner-timeout', '300', '--json']);
  const info = JSON.parse(await cli.line(/^\{/));
  assert.equal(info.role, 'passive', 'deciding at start');
  assert.equal(info.term, 0);
  assert.equal(info.stateEndpoint, `tcp://127.0.0.1:${ports.primary}`);
  await waitFor('stderr lines', () => /clonekv: primary now active/.test(cli.stderr()) && /clonekv: primary backup absent/.test(cli.stderr()));
});

test('serve pair flags are checked', async () => {
  const bad: Array<[string[], RegExp]> = [
    [['serve', '--memory', '--partner', 'tcp://127.0.0.1:5004'], /--partner applies only with --primary or --backup/],
    [['serve', '--memory', '--primary'], /--primary needs --partner/],
    [['serve', '--memory', '--primary', '--backup', '--partner', 'tcp://127.0.0.1:5004'], /exclude each other/],
    [['serve', '--memory', '--backup', '--partner', 'tcp://127.0.0.1:5003', '--state-port', 'x'], /--state-port/],
    [['serve', '--memory', '--backup', '--partner', 'nope'], /partner/],
  ];
  for (const [args, re] of bad) {
    const r = await runCli(args);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.stderr, re, args.join(' '));
  }
});

test('SIGKILL of the active under a writer at full speed: every acknowledged write is on the backup, which takes over when asked', async (t) => {
  const ports = await pairPorts();
  const common = ['--memory', '--port', '0', '--partner-timeout', '500', '--heartbeat', '100', '--json'];
  const primary = spawnCli(t, ['serve', '--primary', '--state-port', String(ports.primary), '--partner', `tcp://127.0.0.1:${ports.backup}`, ...common]);
  const p = JSON.parse(await primary.line(/^\{/));
  const backup = spawnCli(t, ['serve', '--backup', '--state-port', String(ports.backup), '--partner', `tcp://127.0.0.1:${ports.primary}`, ...common]);
  const b = JSON.parse(await backup.line(/^\{/));
  await waitFor('replicating', () => /backup connected/.test(primary.stderr()) || false);
  const writer = await readyPeer(t, p.endpoint, { writeTimeout: 2000 });
  const acked: string[] = [];
  let stop = false;
  const writers = Array.from({ length: 64 }, async (_, w) => {
    for (let i = 0; !stop; i++) {
      const key = `w${w}/${i}`;
      try {
        await writer.set(key, i);
        acked.push(key);
      } catch {
        return; // the server is gone
      }
    }
  });
  await waitFor('some writes', () => acked.length >= 2000);
  primary.child.kill('SIGKILL');
  await once(primary.child, 'exit');
  stop = true;
  const ackedAtKill = [...acked];
  await writer.close();
  await Promise.allSettled(writers);
  const ask = rawDealer(t, b.endpoint);
  await ask.dealer.send([Buffer.from('ICANHAZ?'), EMPTY]);
  await within('takeover', ask.inbox.next('snapshot from the backup', 10_000));
  await waitFor('backup says it is active', () => /clonekv: backup now active/.test(backup.stderr()));
  const reader = await readyPeer(t, b.endpoint);
  const missing = ackedAtKill.filter((k) => reader.get(k) === undefined);
  assert.deepEqual(missing.slice(0, 10), [], `${missing.length} of ${ackedAtKill.length} acknowledged writes missing on the backup`);
});

test('an active paused (SIGSTOP) past partnerTimeout while the backup takes over learns of the new term when resumed: it steps down and acknowledges nothing alone', async (t) => {
  const ports = await pairPorts();
  const common = ['--memory', '--port', '0', '--partner-timeout', '400', '--heartbeat', '50', '--json'];
  const primary = spawnCli(t, ['serve', '--primary', '--state-port', String(ports.primary), '--partner', `tcp://127.0.0.1:${ports.backup}`, ...common]);
  const p = JSON.parse(await primary.line(/^\{/));
  const backup = spawnCli(t, ['serve', '--backup', '--state-port', String(ports.backup), '--partner', `tcp://127.0.0.1:${ports.primary}`, ...common]);
  const b = JSON.parse(await backup.line(/^\{/));
  await waitFor('replicating', () => /backup connected/.test(primary.stderr()) || false);
  const writer = await readyPeer(t, p.endpoint, { writeTimeout: 3000 });
  await writer.set('before', 1);
  primary.child.kill('SIGSTOP');
  t.after(() => void primary.child.kill('SIGCONT'));
  // Writes sent to the paused primary wait in its socket.
  const late = Array.from({ length: 20 }, (_, i) => writer.set(`late${i}`, i).then(() => `late${i}`, () => undefined));
  const ask = rawDealer(t, b.endpoint);
  await ask.dealer.send([Buffer.from('ICANHAZ?'), EMPTY]);
  await within('takeover', ask.inbox.next('snapshot from the backup', 10_000));
  primary.child.kill('SIGCONT');
  await waitFor('the old active steps down', () => /clonekv: primary now passive/.test(primary.stderr()));
  const afterConnected = primary.stderr().split('backup connected')[1]!;
  assert.doesNotMatch(afterConnected, /backup absent/, `it never went on alone: ${primary.stderr()}`);
  const acked = (await Promise.all(late)).filter((k) => k !== undefined);
  await writer.close();
  const reader = await readyPeer(t, b.endpoint);
  assert.equal(reader.get('before'), 1);
  for (const k of acked) assert.notEqual(reader.get(k!), undefined, `${k} was acknowledged but is not on the new active`);
});
