// server.js: runs the S3-compatible test server (@20minutes/s3rver, which verifies SigV4
// header and presigned-URL signatures) on loopback for the integration suite.
//   node server.js --address 127.0.0.1 --port 59000 --directory /tmp/pingvas-s3
// Credentials: S3RVER / S3RVER (the package's built-in account), plus PINGVAS_S3_ACCESS_KEY /
// PINGVAS_S3_SECRET_KEY from the environment when set. Prints "s3 listening on HOST:PORT".
'use strict';

const S3rver = require('@20minutes/s3rver');
const AWSAccount = require('@20minutes/s3rver/lib/models/account');

const opts = { address: '127.0.0.1', port: 59000, directory: '/tmp/pingvas-s3' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const name = argv[i].replace(/^--/, '');
  if (!(name in opts) || i + 1 >= argv.length) {
    console.error(`usage: node server.js [--address A] [--port N] [--directory DIR] (bad: ${argv[i]})`);
    process.exit(2);
  }
  opts[name] = name === 'port' ? Number(argv[i + 1]) : argv[i + 1];
}

const key = process.env.PINGVAS_S3_ACCESS_KEY;
const secret = process.env.PINGVAS_S3_SECRET_KEY;
if (key && secret) AWSAccount.DUMMY_ACCOUNT.createKeyPair(key, secret);

require('fs').mkdirSync(opts.directory, { recursive: true });
const server = new S3rver({
  address: opts.address,
  port: opts.port,
  directory: opts.directory,
  silent: !process.env.PINGVAS_S3_VERBOSE,
  vhostBuckets: false,
});
server.run().then(
  (addr) => console.log(`s3 listening on ${addr.address}:${addr.port}`),
  (err) => {
    console.error(`s3 server failed to start: ${err.message}`);
    process.exit(1);
  },
);
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close().then(() => process.exit(0)));
