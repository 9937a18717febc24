// client.js: the npm Celery client (celery-node) as the seed's producer, for
// tests/integration/test_celery.py. Sends one `TASK` message per job id (protocol 2, Redis broker,
// base64 body) on QUEUE, waits on every AsyncResult with get(TIMEOUT_MS), and prints one JSON
// array: [{"job_id", "task_id", "status", "result"}], status "SUCCESS" or the error's status
// (FAILURE, REVOKED, TIMEOUT) with the exception fields Celery stored.
//   node client.js REDIS_URL QUEUE TASK TIMEOUT_MS JOB_ID...
"use strict";
const celery = require("celery-node");

const [url, queue, task, timeoutMs, ...jobIds] = process.argv.slice(2);
const client = celery.createClient(url, url, queue);

Promise.all(
  jobIds.map((jobId) => {
    const r = client.createTask(task).applyAsync([jobId]);
    return r.get(Number(timeoutMs)).then(
      (result) => ({ job_id: jobId, task_id: r.taskId, status: "SUCCESS", result }),
      (err) => ({
        job_id: jobId,
        task_id: r.taskId,
        status: err.message,
        result: { exc_type: err.exc_type, exc_message: err.exc_message, exc_module: err.exc_module },
      })
    );
  })
).then(
  (out) => {
    process.stdout.write(JSON.stringify(out) + "\n");
    process.exit(0);
  },
  (err) => {
    process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
    process.exit(1);
  }
);
