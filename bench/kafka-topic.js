// Topic admin for the benchmarks, through kafkajs (installed by scripts/install-deps):
//   node bench/kafka-topic.js create TOPIC PARTITIONS
//   node bench/kafka-topic.js delete TOPIC [TOPIC...]
//   node bench/kafka-topic.js list-prefix PREFIX      (one name per line)
// The broker comes from KAFKA_BOOTSTRAP.
const path = require('path');
const { Kafka, logLevel } = require(path.join(__dirname, '../.deps/node/node_modules/kafkajs'));

async function main() {
  const [cmd, ...args] = process.argv.slice(2);
  const kafka = new Kafka({
    clientId: 'connectd-bench',
    brokers: [process.env.KAFKA_BOOTSTRAP],
    logLevel: logLevel.ERROR,
  });
  const admin = kafka.admin();
  await admin.connect();
  try {
    if (cmd === 'create') {
      await admin.createTopics({
        waitForLeaders: true,
        topics: [{ topic: args[0], numPartitions: parseInt(args[1], 10), replicationFactor: 1 }],
      });
    } else if (cmd === 'delete') {
      await admin.deleteTopics({ topics: args, timeout: 30000 });
    } else if (cmd === 'list-prefix') {
      const names = (await admin.listTopics()).filter((t) => t.startsWith(args[0])).sort();
      if (names.length) process.stdout.write(names.join('\n') + '\n');
    } else {
      throw new Error(`unknown command ${cmd}`);
    }
  } finally {
    await admin.disconnect();
  }
}
main().catch((e) => { console.error(e.message || e); process.exit(1); });
