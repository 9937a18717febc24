// bullmq-bench.js: the peer measurements of bench/run.sh, BullMQ on a local redis-server.
//
//   node bullmq-bench.js add  PORT SECONDS CONCURRENCY       -> (a) adds/s with CONCURRENCY adds in flight
//   node bullmq-bench.js e2e  PORT JOBS CONCURRENCY WORKER_C  -> (b) end-to-end jobs/s: JOBS adds
//        (CONCURRENCY in flight) while a no-op worker process (concurrency WORKER_C) runs them;
//        jobs/s = JOBS / (last job finished - first add started), the definition pingvas uses.
//
// Prints one JSON line. BullMQ runs with its defaults (completed jobs are kept, like pingvas
// keeps its job rows). The job data is the body pingvas gets for the same measurement.
'use strict';
const { Queue, Worker } = require('bullmq');
const { fork } = require('child_process');

const [mode, portArg, a1, a2, a3] = process.argv.slice(2);
const connection = { host: '127.0.0.1', port: Number(portArg) };
const data = (i) => ({ prompt: `Test image ${i}`, model: 'sd15', width: 64, height: 64, steps: 1 });

async function addMode(seconds, concurrency) {
  const q = new Queue('bench-add', { connection });
  await q.obliterate({ force: true });
  let n = 0;
  const start = process.hrtime.bigint();
  const end = start + BigInt(Math.round(seconds * 1e9));
  const lat = [];
  async function loop() {
    while (process.hrtime.bigint() < end) {
      const t = process.hrtime.bigint();
      await q.add('generate', data(n++));
      lat.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, loop));
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  lat.sort((x, y) => x - y);
  const pct = (p) => lat[Math.max(0, Math.ceil(p * lat.length) - 1)];
  console.log(JSON.stringify({ peer: 'bullmq', measure: 'add', adds: lat.length, seconds: secs,
    per_second: lat.length / secs, latency_ms: { p50: pct(0.5), p99: pct(0.99) } }));
  await q.obliterate({ force: true });
  await q.close();
}

function workerMode(jobs, concurrency) {
  let done = 0;
  const w = new Worker('bench-e2e', async () => {}, { connection, concurrency });
  w.on('completed', () => {
    done++;
    if (done === jobs) process.send({ done: Date.now() });
  });
  w.waitUntilReady().then(() => process.send({ ready: true }));
  process.on('message', async (m) => {
    if (m === 'stop') {
      await w.close();
      process.exit(0);
    }
  });
}

async function e2eMode(jobs, concurrency, workerConcurrency) {
  const q = new Queue('bench-e2e', { connection });
  await q.obliterate({ force: true });
  const child = fork(__filename, ['worker', portArg, String(jobs), String(workerConcurrency)]);
  await new Promise((resolve) => child.on('message', (m) => m.ready && resolve()));
  const doneAt = new Promise((resolve) => child.on('message', (m) => m.done && resolve(m.done)));
  const start = Date.now();
  let next = 0;
  async function loop() {
    while (next < jobs) await q.add('generate', data(next++));
  }
  await Promise.all(Array.from({ length: concurrency }, loop));
  const addedAt = Date.now();
  const end = await doneAt;
  const secs = (end - start) / 1000;
  console.log(JSON.stringify({ peer: 'bullmq', measure: 'e2e', jobs, seconds: secs,
    jobs_per_second: jobs / secs, submit_seconds: (addedAt - start) / 1000,
    worker_concurrency: workerConcurrency }));
  child.send('stop');
  await new Promise((resolve) => child.on('exit', resolve));
  await q.obliterate({ force: true });
  await q.close();
}

(async () => {
  if (mode === 'add') await addMode(Number(a1), Number(a2));
  else if (mode === 'e2e') await e2eMode(Number(a1), Number(a2), Number(a3));
  else if (mode === 'worker') return workerMode(Number(a1), Number(a2));
  else {
    console.error('usage: node bullmq-bench.js add PORT SECONDS CONCURRENCY | e2e PORT JOBS CONCURRENCY WORKER_C');
    process.exit(2);
  }
  process.exit(0);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
