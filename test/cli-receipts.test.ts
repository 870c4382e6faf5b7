/**
 * `clonekv set … --confirm-by NAMES` (issue 10, signed receipts): exits 0 only once every named
 * recipient confirmed, non-zero naming those that did not.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { generateIdentity, Policy, saveIdentity } from '../src/index.ts';
import { forwarder, readyPeer, runCli } from './helpers.ts';

test('clonekv set --confirm-by: exit 0 once all confirm, exit 1 naming the one that did not', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'clonekv-receipts-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const [op, billing, auth] = [generateIdentity(), generateIdentity(), generateIdentity()];
  const opFile = join(dir, 'op.json');
  saveIdentity(op, opFile);
  const policyFile = join(dir, 'policy.yaml');
  const text = `writers:
  - { name: op, key: "${op.id}", prefixes: [config/] }
  - { name: billing, key: "${billing.id}", prefixes: [] }
  - { name: auth, key: "${auth.id}", prefixes: [] }
`;
  writeFileSync(policyFile, text);
  const policy = Policy.parse(text);
  const fwd = await forwarder(t, { policy });
  await readyPeer(t, fwd.endpoint, { identity: billing, policy, subtree: 'config/' });
  const base = ['set', 'config/x', 'v1', '--server', fwd.endpoint, '--identity', opFile, '--policy', policyFile];

  const missing = await runCli([...base, '--confirm-by', 'billing,auth', '--timeout', '1500']);
  assert.equal(missing.code, 1, missing.stderr);
  assert.match(missing.stderr, /CLONEKV_UNCONFIRMED|not confirmed/);
  assert.match(missing.stderr, /by: auth/);
  assert.doesNotMatch(missing.stderr, /billing/);

  await readyPeer(t, fwd.endpoint, { identity: auth, policy, subtree: 'config/' });
  const ok = await runCli([...base, '--confirm-by', 'billing,auth']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /^\d+\n$/);

  const usage = await runCli(['set', 'config/x', 'v', '--server', fwd.endpoint, '--confirm-by', 'billing']);
  assert.notEqual(usage.code, 0);
  assert.match(usage.stderr, /--confirm-by needs --identity/);
});
