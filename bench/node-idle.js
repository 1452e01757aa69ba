// Reference of the idle scenario (bench/bench.py, group idle): the seed
// system's stack at rest in one Node.js process. One kafkajs consumer per
// onboarding topic, each in its own consumer group (like the six Lambdas with
// their MSK triggers), an idle `ws` WebSocket server and an idle http server.
//
//   node bench/node-idle.js BOOTSTRAP GROUP_PREFIX TOPIC...
// Prints "READY" once every consumer joined its group and was assigned its
// topic's partitions, and both servers listen. Stops on SIGTERM.
'use strict';
const path = require('path');
const http = require('http');
const mods = path.join(__dirname, '../.deps/node/node_modules');
const { Kafka, logLevel } = require(path.join(mods, 'kafkajs'));
const WebSocket = require(path.join(mods, 'ws'));

const [bootstrap, groupPrefix, ...topics] = process.argv.slice(2);
const kafka = new Kafka({ clientId: 'bench-node-idle', brokers: [bootstrap], logLevel: logLevel.ERROR });
const consumers = [];

async function main() {
  let joined = 0;
  const all = topics.map(async (topic) => {
    const c = kafka.consumer({ groupId: `${groupPrefix}-${topic}` });
    consumers.push(c);
    let seen = false;
    c.on(c.events.GROUP_JOIN, (e) => {
      if (!seen && ((e.payload.memberAssignment || {})[topic] || []).length) {
        seen = true;
        joined++;
      }
    });
    await c.connect();
    await c.subscribe({ topic, fromBeginning: true });
    await c.run({ eachMessage: async () => {} });
  });
  await Promise.all(all);
  const api = http.createServer((req, res) => res.writeHead(404).end());
  await new Promise((r) => api.listen(0, '127.0.0.1', r));
  const wss = new WebSocket.Server({ host: '127.0.0.1', port: 0 });
  await new Promise((r) => wss.once('listening', r));
  while (joined < topics.length) await new Promise((r) => setTimeout(r, 20));
  process.stdout.write('READY\n');
}

process.on('SIGTERM', async () => {
  try {
    await Promise.all(consumers.map((c) => c.disconnect()));
  } finally {
    process.exit(0);
  }
});

main().catch((e) => {
  process.stderr.write(`node-idle: ${e.stack || e}\n`);
  process.exit(2);
});
