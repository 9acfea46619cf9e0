#!/usr/bin/env node
// The Node peer of `cargo xtask bench`: "Hello, World!" (200, text/plain, 13 bytes) from a
// node:cluster primary and N workers.
//
// Usage: node server.js [--addr HOST:PORT] [--workers N] [--sleep MS]
// Env equivalents (argv wins): ADDR, WORKERS, SLEEP_MS
//   addr     default 127.0.0.1:8080
//   workers  default os.availableParallelism() (2 on the bench box); 0 = no cluster, serve in this process
//   sleep    handler waits MS milliseconds (setTimeout, non-blocking) before replying; 0 = none
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');
const os = require('node:os');

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
    if (!m) continue;
    out[m[1]] = m[2] !== undefined ? m[2] : argv[++i];
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const addr = args.addr || process.env.ADDR || '127.0.0.1:8080';
const cpus = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
const workers = parseInt(args.workers ?? process.env.WORKERS ?? String(cpus), 10);
const sleepMs = parseInt(args.sleep ?? process.env.SLEEP_MS ?? '0', 10);
const idx = addr.lastIndexOf(':');
const host = addr.slice(0, idx) || '127.0.0.1';
const port = parseInt(addr.slice(idx + 1), 10);

const BODY = Buffer.from('Hello, World!');
const HEADERS = { 'Content-Type': 'text/plain', 'Content-Length': BODY.length };

function serve() {
  const reply = (res) => { res.writeHead(200, HEADERS); res.end(BODY); };
  const server = http.createServer(sleepMs > 0
    ? (req, res) => { setTimeout(reply, sleepMs, res); }
    : (req, res) => { reply(res); });
  server.keepAliveTimeout = 65000;
  server.listen(port, host);
  // Exit if orphaned (master killed by SIGKILL): the IPC channel closes.
  if (cluster.isWorker) process.on('disconnect', () => process.exit(0));
}

if (workers > 0 && cluster.isPrimary) {
  // Default scheduling policy on Linux is round-robin in the primary (SCHED_RR).
  // Set NODE_CLUSTER_SCHED_POLICY=none to let the kernel distribute accepts.
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('exit', (w, code, sig) => {
    if (!shuttingDown) console.error(`worker ${w.process.pid} exited (${sig || code})`);
  });
  let shuttingDown = false;
  const stop = () => {
    shuttingDown = true;
    for (const id in cluster.workers) cluster.workers[id].process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 200).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  serve();
}
