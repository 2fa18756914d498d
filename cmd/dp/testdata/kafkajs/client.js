// TestKafkaJS's client: KafkaJS against one Gregor node. Usage:
//   node client.js BROKER TOPIC
// It creates TOPIC (3 partitions), produces keyed records with a header with acks=all
// (idempotent) and acks=1, then runs a transactional producer: a committed transaction,
// an aborted one, and a committed one that also commits group kjs-eos's offset on
// partition 0 (sendOffsets). It then reads TOPIC back as a group member at
// read_committed (KafkaJS's default) and with a read_uncommitted consumer, and fetches
// kjs-eos's committed offsets. Every line it prints is tab-separated:
//   REC  isolation  key  value  header  partition  offset
//   OFFSET  group  partition  offset
//   DONE
// Any failure exits 1 with the error on stderr; the whole run is bounded (60 s).
const { Kafka, logLevel, CompressionTypes } = require('kafkajs');

const [broker, topic] = process.argv.slice(2);
const kafka = new Kafka({ clientId: 'gregor-kafkajs', brokers: [broker], logLevel: logLevel.NOTHING,
  retry: { retries: 8, initialRetryTime: 100 } });

const out = (...fields) => process.stdout.write(fields.join('\t') + '\n');
// msgs are the records of one send: keys k0-k3, values <tag>-value-<i, 3 digits>, a
// header h of i (the Go test's wantRecords).
const msgs = (tag, n) => Array.from({ length: n }, (_, i) => ({
  key: `k${i % 4}`, value: `${tag}-value-${String(i).padStart(3, '0')}`, headers: { h: String(i) } }));

// readAll reads topic from the start with consumer until it has want records, and
// prints them under label.
async function readAll(consumer, label, want) {
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let n = 0;
  await new Promise((resolve, reject) => {
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        out('REC', label, message.key.toString(), message.value.toString(),
          message.headers.h ? message.headers.h.toString() : '', partition, message.offset);
        if (++n === want) resolve();
      },
    }).catch(reject);
  });
  await consumer.disconnect();
}

async function main() {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 3, replicationFactor: 1 }], waitForLeaders: true });

  const idem = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await idem.connect();
  await idem.send({ topic, acks: -1, messages: msgs('acksall', 30) });
  await idem.send({ topic, acks: -1, compression: CompressionTypes.GZIP, messages: msgs('gzip', 10) });
  await idem.disconnect();
  const plain = kafka.producer();
  await plain.connect();
  await plain.send({ topic, acks: 1, messages: msgs('acks1', 30) });
  await plain.disconnect();

  const tp = kafka.producer({ transactionalId: 'kjs-tx', idempotent: true, maxInFlightRequests: 1 });
  await tp.connect();
  let txn = await tp.transaction();
  await txn.send({ topic, messages: msgs('committed', 12) });
  await txn.commit();
  txn = await tp.transaction();
  await txn.send({ topic, messages: msgs('aborted', 12) });
  await txn.abort();
  txn = await tp.transaction();
  await txn.send({ topic, messages: msgs('eos', 6) });
  await txn.sendOffsets({ consumerGroupId: 'kjs-eos', topics: [{ topic, partitions: [{ partition: 0, offset: '5' }] }] });
  await txn.commit();
  await tp.disconnect();

  // 30 + 10 + 30 plain records, 12 + 6 committed ones; read_uncommitted also the 12
  // aborted ones.
  await readAll(kafka.consumer({ groupId: 'kjs-readers' }), 'read_committed', 88);
  await readAll(kafka.consumer({ groupId: 'kjs-raw', readUncommitted: true }), 'read_uncommitted', 100);

  for (const t of await admin.fetchOffsets({ groupId: 'kjs-eos', topics: [topic] })) {
    for (const p of t.partitions) {
      out('OFFSET', 'kjs-eos', p.partition, p.offset);
    }
  }
  await admin.disconnect();
  out('DONE');
}

const timer = setTimeout(() => { console.error('kafkajs client: not done after 60 s'); process.exit(1); }, 60000);
main().then(() => { clearTimeout(timer); process.exit(0); },
  (err) => { console.error('kafkajs client:', err); process.exit(1); });
