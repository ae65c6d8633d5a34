// Decodes a Prometheus protobuf exposition (length-delimited io.prometheus.client.MetricFamily messages, file given as
// the argument) with protobufjs and prints the families as JSON (64-bit integers as strings). The schema below states
// the field numbers of Prometheus's io/prometheus/client/metrics.proto (prometheus/client_model), the messages the
// scrape needs; it is written here, not copied.
'use strict';
const fs = require('fs');
const protobuf = require('protobufjs');

const root = protobuf.Root.fromJSON({
  nested: {
    LabelPair: { fields: { name: { type: 'string', id: 1 }, value: { type: 'string', id: 2 } } },
    Gauge: { fields: { value: { type: 'double', id: 1 } } },
    Counter: { fields: { value: { type: 'double', id: 1 } } },
    Timestamp: { fields: { seconds: { type: 'int64', id: 1 }, nanos: { type: 'int32', id: 2 } } },
    Exemplar: { fields: { label: { rule: 'repeated', type: 'LabelPair', id: 1 }, value: { type: 'double', id: 2 }, timestamp: { type: 'Timestamp', id: 3 } } },
    Bucket: { fields: { cumulativeCount: { type: 'uint64', id: 1 }, upperBound: { type: 'double', id: 2 }, exemplar: { type: 'Exemplar', id: 3 } } },
    BucketSpan: { fields: { offset: { type: 'sint32', id: 1 }, length: { type: 'uint32', id: 2 } } },
    Histogram: {
      fields: {
        sampleCount: { type: 'uint64', id: 1 },
        sampleSum: { type: 'double', id: 2 },
        bucket: { rule: 'repeated', type: 'Bucket', id: 3 },
        schema: { type: 'sint32', id: 5 },
        zeroThreshold: { type: 'double', id: 6 },
        zeroCount: { type: 'uint64', id: 7 },
        negativeSpan: { rule: 'repeated', type: 'BucketSpan', id: 9 },
        negativeDelta: { rule: 'repeated', type: 'sint64', id: 10 },
        positiveSpan: { rule: 'repeated', type: 'BucketSpan', id: 12 },
        positiveDelta: { rule: 'repeated', type: 'sint64', id: 13 },
      },
    },
    Metric: {
      fields: {
        label: { rule: 'repeated', type: 'LabelPair', id: 1 },
        gauge: { type: 'Gauge', id: 2 },
        counter: { type: 'Counter', id: 3 },
        histogram: { type: 'Histogram', id: 7 },
        timestampMs: { type: 'int64', id: 6 },
      },
    },
    MetricType: { values: { COUNTER: 0, GAUGE: 1, SUMMARY: 2, UNTYPED: 3, HISTOGRAM: 4, GAUGE_HISTOGRAM: 5 } },
    MetricFamily: {
      fields: {
        name: { type: 'string', id: 1 },
        help: { type: 'string', id: 2 },
        type: { type: 'MetricType', id: 3 },
        metric: { rule: 'repeated', type: 'Metric', id: 4 },
        unit: { type: 'string', id: 5 },
      },
    },
  },
});

const Family = root.lookupType('MetricFamily');
const reader = protobuf.Reader.create(fs.readFileSync(process.argv[2]));
const families = [];
while (reader.pos < reader.len) {
  const family = Family.decodeDelimited(reader);
  const problem = Family.verify(family);
  if (problem) {
    process.stderr.write(`invalid MetricFamily: ${problem}\n`);
    process.exit(2);
  }
  families.push(Family.toObject(family, { longs: String, enums: String, defaults: true, arrays: true }));
}
process.stdout.write(JSON.stringify(families));
