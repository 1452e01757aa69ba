// Kafka admin calls for tests, benchmarks and the demo, through kafkajs — a
// client connectd shares no code with.  The broker comes from KAFKA_BOOTSTRAP.
//   node scripts/kafka-admin.js create-topic TOPIC PARTITIONS
//   node scripts/kafka-admin.js delete-topic TOPIC [TOPIC...]
//   node scripts/kafka-admin.js list-prefix PREFIX      (one name per line)
//   node scripts/kafka-admin.js offsets GROUP TOPIC     -> JSON {"0": 12, "1": -1, ...}
//   node scripts/kafka-admin.js set-offsets GROUP TOPIC P:OFFSET [P:OFFSET...]
//                                       (commits for an inactive group)
const path = require('path');
const { Kafka, logLevel } = require(path.join(__dirname, '../.deps/node/node_modules/kafkajs'));

async function main() {
  const [cmd, ...args] = process.argv.slice(2);
  const kafka = new Kafka({
    clientId: 'connectd-tools',
    brokers: [process.env.KAFKA_BOOTSTRAP],
    logLevel: logLevel.ERROR,
  });
  const admin = kafka.admin();
  await admin.connect();
  try {
    if (cmd === 'create-topic') {
      await admin.createTopics({
        waitForLeaders: true,
        topics: [{ topic: args[0], numPartitions: parseInt(args[1], 10), replicationFactor: 1 }],
      });
    } else if (cmd === 'delete-topic') {
      await admin.deleteTopics({ topics: args, timeout: 30000 });
    } else if (cmd === 'list-prefix') {
      const names = (await admin.listTopics()).filter((t) => t.startsWith(args[0])).sort();
      if (names.length) process.stdout.write(names.join('\n') + '\n');
    } else if (cmd === 'offsets') {
      const res = await admin.fetchOffsets({ groupId: args[0], topics: [args[1]] });
      const out = {};
      for (const t of res) for (const p of t.partitions) out[p.partition] = parseInt(p.offset, 10);
      process.stdout.write(JSON.stringify(out));
    } else if (cmd === 'set-offsets') {
      const partitions = args.slice(2).map((po) => {
        const [partition, offset] = po.split(':');
        return { partition: parseInt(partition, 10), offset };
      });
      await admin.setOffsets({ groupId: args[0], topic: args[1], partitions });
    } else {
      throw new Error(`unknown command ${cmd}`);
    }
  } finally {
    await admin.disconnect();
  }
}
main().catch((e) => { console.error(e.message || e); process.exit(1); });
