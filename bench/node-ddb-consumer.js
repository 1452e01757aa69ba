// The Node.js reference of bench.py's consume → sink-dynamodb scenario: the
// seed system's stack, a kafkajs consumer writing each record to DynamoDB
// through @aws-sdk/client-dynamodb's BatchWriteItem, 25 items per request,
// against the same loopback endpoint as the engine (dummy credentials).
//   node bench/node-ddb-consumer.js BOOTSTRAP TOPIC GROUP N ENDPOINT TABLE
// Items are what the engine's sink writes with bench.py's template: eventId,
// customerId, eventType, timestamp (S) and data (M). Offsets are committed
// after each batch's writes; exits 0 once N records were written.
const path = require('path');
const mods = path.join(__dirname, '../.deps/node/node_modules');
const { Kafka, logLevel } = require(path.join(mods, 'kafkajs'));
const { DynamoDBClient, BatchWriteItemCommand } = require(path.join(mods, '@aws-sdk/client-dynamodb'));

const [bootstrap, topic, group, nStr, endpoint, table] = process.argv.slice(2);
const N = parseInt(nStr, 10);

function av(v) {
  if (v === null) return { NULL: true };
  if (typeof v === 'string') return { S: v };
  if (typeof v === 'number') return { N: String(v) };
  if (typeof v === 'boolean') return { BOOL: v };
  if (Array.isArray(v)) return { L: v.map(av) };
  const m = {};
  for (const k of Object.keys(v)) m[k] = av(v[k]);
  return { M: m };
}

async function main() {
  const ddb = new DynamoDBClient({
    endpoint, region: 'eu-west-1',
    credentials: { accessKeyId: 'AKIDBENCHDUMMY', secretAccessKey: 'bench-dummy-secret' },
  });
  const kafka = new Kafka({ clientId: 'bench-node', brokers: [bootstrap], logLevel: logLevel.ERROR });
  const consumer = kafka.consumer({ groupId: group, maxBytesPerPartition: 4 << 20 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let written = 0;
  let finish;
  const finished = new Promise((r) => { finish = r; });

  async function write(items) {
    let req = { RequestItems: { [table]: items } };
    for (;;) {
      const out = await ddb.send(new BatchWriteItemCommand(req));
      const un = out.UnprocessedItems || {};
      if (!un[table] || un[table].length === 0) return;
      req = { RequestItems: un };
    }
  }

  await consumer.run({
    partitionsConsumedConcurrently: 3,
    eachBatch: async ({ batch, resolveOffset, heartbeat }) => {
      const items = batch.messages.map((m) => {
        const v = JSON.parse(m.value.toString());
        return { PutRequest: { Item: {
          eventId: { S: v.eventId }, customerId: { S: v.customerId },
          eventType: { S: v.eventType }, timestamp: { S: v.timestamp }, data: av(v.data),
        } } };
      });
      const reqs = [];
      for (let i = 0; i < items.length; i += 25) reqs.push(write(items.slice(i, i + 25)));
      await Promise.all(reqs);
      if (batch.messages.length) resolveOffset(batch.messages[batch.messages.length - 1].offset);
      await heartbeat();
      written += items.length;
      if (written >= N) finish();
    },
  });
  await finished;
  await consumer.disconnect();
  process.stdout.write(`written ${written}\n`);
  process.exit(0);
}

main().catch((e) => { console.error(e); process.exit(1); });
