/**
 * The CLI's security commands (issue 10): `clonekv keygen`, `set --identity`, `serve --policy`
 * with SIGHUP reload and reload when the file changes (a bad file keeps the old policy), refusals
 * as non-zero exits.
 *
 * Topology: `clonekv serve --policy FILE` in a child process (ports picked by the OS), and
 * `clonekv set/del/keygen` runs as children against it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { generateIdentity, loadIdentity, saveIdentity } from '../src/index.ts';
import { readyPeer, runCli, spawnCli, waitFor } from './helpers.ts';

test('keygen writes a 0600 key file and prints the public key; set --identity signs; serve --policy refuses and reloads on SIGHUP', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'clonekv-cli-sec-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const keyFile = join(dir, 'alice.json');
  const gen = await runCli(['keygen', '--out', keyFile]);
  assert.equal(gen.code, 0, gen.stderr);
  const publicKey = gen.stdout.trim();
  assert.match(publicKey, /^ed25519:[A-Za-z0-9_-]{43}$/);
  assert.equal(statSync(keyFile).mode & 0o777, 0o600);
  assert.equal(loadIdentity(keyFile).id, publicKey);
  assert.match(gen.stderr, /mode 0600/);

  const policyFile = join(dir, 'policy.yaml');
  writeFileSync(policyFile, `writers:\n  - name: alice\n    key: ${publicKey}\n    prefixes: [config/]\n`);
  const serve = spawnCli(t, ['serve', '--memory', '--port', '0', '--json', '--policy', policyFile]);
  const { endpoint } = JSON.parse(await serve.line(/^\{"endpoint"/)) as { endpoint: string };
  assert.match(serve.stderr(), /policy .*policy\.yaml in force \(1 writers\); SIGHUP or a change to the file reloads it/);
  const server = ['--server', endpoint, '--timeout', '10000'];

  const ok = await runCli(['set', 'config/a', 'v1', '--identity', keyFile, ...server]);
  assert.equal(ok.code, 0, ok.stderr);
  const unsigned = await runCli(['set', 'config/a', 'v2', ...server]);
  assert.equal(unsigned.code, 1);
  assert.match(unsigned.stderr, /refused the write to "config\/a" \(not authorized\): unsigned write/);
  assert.match(unsigned.stderr, /sign it with --identity FILE/);
  const outside = await runCli(['set', 'flags/a', 'v', '--identity', keyFile, ...server]);
  assert.equal(outside.code, 1);
  assert.ok(outside.stderr.includes(`identity alice (${publicKey}) may not write "flags/a"`), outside.stderr);

  // SIGHUP: the new file is read at once.
  writeFileSync(policyFile, `writers:\n  - name: alice\n    key: ${publicKey}\n    prefixes: [config/, flags/]\n`);
  serve.child.kill('SIGHUP');
  await waitFor('the reload to be logged', () => /policy .*policy\.yaml reloaded \(1 writers\) on SIGHUP/.test(serve.stderr()), 10_000);
  const now = await runCli(['set', 'flags/a', 'v', '--identity', keyFile, ...server]);
  assert.equal(now.code, 0, now.stderr);

  // A bad file on SIGHUP: said on stderr, the old policy stays.
  writeFileSync(policyFile, 'writers:\n  - key: 12\n');
  serve.child.kill('SIGHUP');
  await waitFor('the failed reload to be logged', () => /NOT reloaded, the previous policy stays in force: policy .*policy\.yaml: writers\[0\]/.test(serve.stderr()), 10_000);
  const still = await runCli(['set', 'flags/b', 'v', '--identity', keyFile, ...server]);
  assert.equal(still.code, 0, still.stderr);

  const reader = await readyPeer(t, endpoint);
  assert.equal(reader.get('config/a'), 'v1');
  assert.equal(reader.get('flags/b'), 'v');
  const stats = await reader.serverStats();
  assert.equal(stats.unauthorized, 2);
});

test('serve --policy reloads when the file changes (once per burst of writes, logged); a bad change keeps the policy', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'clonekv-cli-watch-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const alice = generateIdentity();
  const keyFile = join(dir, 'alice.json');
  saveIdentity(alice, keyFile);
  const policyFile = join(dir, 'policy.yaml');
  const policyText = (prefixes: string) => `writers:\n  - name: alice\n    key: ${alice.id}\n    prefixes: [${prefixes}]\n`;
  writeFileSync(policyFile, policyText('config/'));
  const serve = spawnCli(t, ['serve', '--memory', '--port', '0', '--json', '--policy', policyFile]);
  const { endpoint } = JSON.parse(await serve.line(/^\{"endpoint"/)) as { endpoint: string };
  const writer = await readyPeer(t, endpoint, { identity: alice });
  await assert.rejects(writer.set('flags/a', 'v'), { code: 'CLONEKV_UNAUTHORIZED' });

  // No signal: writing the file is enough. Several writes in a row give one reload.
  writeFileSync(policyFile, policyText('config/'));
  writeFileSync(policyFile, policyText('config/, flags/'));
  await waitFor('the reload to be logged', () => /policy .*policy\.yaml reloaded \(1 writers\) after the file changed/.test(serve.stderr()), 10_000);
  assert.ok(await writer.set('flags/a', 'v'));

  // An editor's save: a new file renamed over the old one.
  writeFileSync(join(dir, 'policy.yaml.tmp'), policyText('config/, flags/, more/'));
  renameSync(join(dir, 'policy.yaml.tmp'), policyFile);
  await waitFor('the second reload', () => (serve.stderr().match(/reloaded \(1 writers\) after the file changed/g) ?? []).length === 2 || undefined, 10_000);
  assert.ok(await writer.set('more/a', 'v'));

  // A bad change: said on stderr, the policy in force stays.
  writeFileSync(policyFile, 'writers:\n  - key: 12\n');
  await waitFor('the failed reload to be logged', () => /NOT reloaded, the previous policy stays in force: policy .*policy\.yaml: writers\[0\]/.test(serve.stderr()), 10_000);
  assert.ok(await writer.set('flags/b', 'v'));
  assert.equal((serve.stderr().match(/reloaded \(1 writers\) after the file changed/g) ?? []).length, 2, 'one reload per burst of changes');
});
