// Decodes one ExportMetricsServiceRequest (protobuf, file given as the argument) with the OTLP definitions that
// OpenTelemetry JS generates from the official .proto files, and prints it as JSON (64-bit integers as strings).
'use strict';
const fs = require('fs');
const root = require('@opentelemetry/otlp-transformer/build/src/generated/root.js');

const Request = root.opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest;
const message = Request.decode(fs.readFileSync(process.argv[2]));
const problem = Request.verify(message);
if (problem) {
  process.stderr.write(`invalid ExportMetricsServiceRequest: ${problem}\n`);
  process.exit(2);
}
process.stdout.write(JSON.stringify(Request.toObject(message, { longs: String, enums: String, defaults: true, arrays: true })));
