/**
 * The long form of the fuzz test (test/fuzz.test.ts): `npm run fuzz -- --messages=N --seed=S
 * [--runs=K]`. Each run prints one JSON line (the report: messages per socket and per kind,
 * counters, messages/s, problems); the exit code is 1 if any run broke a promise. Without
 * --seed each run takes a random one (printed); run k of a seeded series uses seed S+k.
 */
import { randomInt } from 'node:crypto';
import { runFuzz } from '../test/fuzz-harness.ts';

function arg(name: string): string | undefined {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`));
  return a?.slice(name.length + 3);
}
const messages = Number(arg('messages') ?? 100_000);
const runs = Number(arg('runs') ?? 1);
const base = arg('seed') !== undefined ? Number(arg('seed')) : undefined;
if (!Number.isSafeInteger(messages) || messages < 100 || !Number.isSafeInteger(runs) || runs < 1 || (base !== undefined && !Number.isSafeInteger(base))) {
  console.error('usage: npm run fuzz -- [--messages=N (>= 100, default 100000)] [--seed=S] [--runs=K]');
  process.exit(2);
}
let failed = 0;
for (let k = 0; k < runs; k++) {
  const seed = base !== undefined ? base + k : randomInt(2 ** 31);
  console.error(`fuzz: run ${k + 1}/${runs}, seed ${seed}, ${messages} messages`);
  const report = await runFuzz({ messages, seed, log: (line) => console.error(line) });
  console.log(JSON.stringify(report));
  if (report.problems.length > 0) {
    failed++;
    console.error(`fuzz: seed ${seed} FAILED (replay: npm run fuzz -- --messages=${messages} --seed=${seed}):\n  ${report.problems.join('\n  ')}`);
  }
}
process.exit(failed > 0 ? 1 : 0);
