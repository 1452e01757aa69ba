// Kafka admin calls for tests and the demo, through kafkajs — a client
// connectd does not share code with.
//   node scripts/kafka-admin.js create-topic TOPIC PARTITIONS
//   node scripts/kafka-admin.js offsets GROUP TOPIC      -> JSON {"0": 12, "1": -1, ...}
const path = require('path');
const { Kafka, logLevel } = require(path.join(__dirname, '../.deps/node/node_modules/kafkajs'));

async function main() {
  const [cmd, a, b] = process.argv.slice(2);
  const kafka = new Kafka({
    clientId: 'connectd-tests',
    brokers: [process.env.KAFKA_BOOTSTRAP],
    logLevel: logLevel.ERROR,
  });
  const admin = kafka.admin();
  await admin.connect();
  try {
    if (cmd === 'create-topic') {
      await admin.createTopics({
        waitForLeaders: true,
        topics: [{ topic: a, numPartitions: parseInt(b, 10), replicationFactor: 1 }],
      });
    } else if (cmd === 'offsets') {
      const res = await admin.fetchOffsets({ groupId: a, topics: [b] });
      const out = {};
      for (const t of res) for (const p of t.partitions) out[p.partition] = parseInt(p.offset, 10);
      process.stdout.write(JSON.stringify(out));
    } else {
      throw new Error(`unknown command ${cmd}`);
    }
  } finally {
    await admin.disconnect();
  }
}
main().catch((e) => { console.error(e.message || e); process.exit(1); });
