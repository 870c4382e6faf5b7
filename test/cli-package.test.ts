/**
 * The package as npm builds and installs it: a LICENSE, `engines` naming the Node version the
 * CLI needs, every dependency install script reviewed in `allowScripts` (so `npm ci` has no
 * advisory to puzzle over), and `npm pack` building from a clean `dist/`, whose CLI then runs
 * without the TypeScript sources.
 *
 * Topology: no sockets. `npm pack --dry-run` runs in a scratch copy of the package (sources,
 * configs, a link to node_modules) under the system temp directory; nothing is fetched.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, realpath, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const run = promisify(execFile);

interface PackageJson {
  version: string;
  license: string;
  engines: { node: string };
  scripts: Record<string, string>;
  files: string[];
  allowScripts?: Record<string, boolean>;
  overrides?: Record<string, string>;
}

const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as PackageJson;

test('LICENSE is the MIT license of the clonekv authors, and it is packed', async () => {
  const text = await readFile(join(ROOT, 'LICENSE'), 'utf8');
  assert.match(text, /^MIT License\n\nCopyright \(c\) 2026 the clonekv authors\n/);
  assert.match(text, /THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND/);
  assert.equal(pkg.license, 'MIT');
  assert.ok(pkg.files.includes('LICENSE'));
});

test("engines names the Node version the CLI needs (tsx's register() came in Node 20.6)", () => {
  assert.equal(pkg.engines.node, '>=20.6');
});

test('every dependency with an install script is reviewed in allowScripts; no unexplained override', async () => {
  const lock = JSON.parse(await readFile(join(ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { hasInstallScript?: boolean }>;
  };
  const withScripts = Object.entries(lock.packages)
    .filter(([, p]) => p.hasInstallScript === true)
    .map(([path]) => path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length));
  assert.ok(withScripts.length > 0, 'zeromq at least has one');
  for (const name of withScripts) {
    assert.equal(typeof pkg.allowScripts?.[name], 'boolean', `${name}'s install script is approved or denied in allowScripts`);
  }
  // The README says what each approved script does; a pin nobody can explain is gone.
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
  for (const name of withScripts) assert.ok(readme.includes(`\`${name}\``), `README explains ${name}'s install script`);
  assert.equal(pkg.overrides, undefined);
});

test('npm pack builds from a clean dist/, packs the CLI, and the packed CLI runs from dist/', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'clonekv-pack-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  for (const f of ['package.json', 'tsconfig.json', 'tsconfig.build.json', 'README.md', 'LICENSE', 'src', 'bin']) {
    await cp(join(ROOT, f), join(dir, f), { recursive: true });
  }
  await symlink(await realpath(join(ROOT, 'node_modules')), join(dir, 'node_modules'));
  // Left over from an earlier build, e.g. of a module since deleted: must not be packed.
  await mkdir(join(dir, 'dist'));
  await writeFile(join(dir, 'dist', 'stale.js'), 'export {};\n');

  const { stdout } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts=false'], { cwd: dir, timeout: 60_000 });
  const files = (JSON.parse(stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path);
  assert.ok(!files.includes('dist/stale.js'), 'prepack started from a clean dist/');
  await assert.rejects(stat(join(dir, 'dist', 'stale.js')), 'the stale file is gone');
  for (const f of ['LICENSE', 'README.md', 'package.json', 'bin/clonekv.js', 'dist/cli/main.js', 'dist/index.js', 'dist/index.d.ts']) {
    assert.ok(files.includes(f), `packs ${f}`);
  }
  assert.deepEqual(files.filter((f) => !/^(dist\/|bin\/clonekv\.js$|LICENSE$|README\.md$|package\.json$)/.test(f)), [], 'nothing else');

  // Installed, there are no sources: the CLI runs the compiled dist/ and finds package.json.
  await rm(join(dir, 'src'), { recursive: true });
  const version = await run(process.execPath, [join(dir, 'bin', 'clonekv.js'), '--version'], { cwd: tmpdir(), timeout: 20_000 });
  assert.equal(version.stdout, `${pkg.version}\n`);
});
