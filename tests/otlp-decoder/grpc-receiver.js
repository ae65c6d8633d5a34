// A real OTLP/gRPC receiver on grpc-js: serves opentelemetry.proto.collector.metrics.v1.MetricsService/Export on
// 127.0.0.1 (a free port), decoding each request with the definitions OpenTelemetry JS generates from the official
// .proto files. Prints "PORT <n>" once listening, then one line per call: "CALL <json>" with the decoded request, the
// user-agent PerCpu sent, the deadline its grpc-timeout set, and the answer given. A gzipped message (grpc-encoding:
// gzip) decodes only because grpc-js inflated it as that header says.
// The answers come from the arguments, one per call in order, the last one repeated:
//   ok | unavailable | unavailable-retry:<seconds> | exhausted | exhausted-retry:<seconds> | invalid | hang
// ("hang" never answers; "*-retry" attach a google.rpc.RetryInfo in grpc-status-details-bin, as collectors do).
'use strict';
const grpc = require('@grpc/grpc-js');
const protobuf = require('protobufjs');
const root = require('@opentelemetry/otlp-transformer/build/src/generated/root.js');

const Request = root.opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest;
const Response = root.opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceResponse;

// google.rpc.Status, google.protobuf.Any, google.rpc.RetryInfo and google.protobuf.Duration, field for field.
const rpc = protobuf.Root.fromJSON({
  nested: {
    Duration: { fields: { seconds: { type: 'int64', id: 1 }, nanos: { type: 'int32', id: 2 } } },
    RetryInfo: { fields: { retryDelay: { type: 'Duration', id: 1 } } },
    Any: { fields: { typeUrl: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } } },
    Status: { fields: { code: { type: 'int32', id: 1 }, message: { type: 'string', id: 2 }, details: { rule: 'repeated', type: 'Any', id: 3 } } },
  },
});

const answers = process.argv.slice(2);
let calls = 0;

function failure(code, message, retrySeconds) {
  const metadata = new grpc.Metadata();
  if (retrySeconds !== undefined) {
    const whole = Math.floor(retrySeconds);
    const retryInfo = rpc.lookupType('RetryInfo').encode({ retryDelay: { seconds: whole, nanos: Math.round((retrySeconds - whole) * 1e9) } }).finish();
    const status = rpc.lookupType('Status').encode({ code, message, details: [{ typeUrl: 'type.googleapis.com/google.rpc.RetryInfo', value: retryInfo }] }).finish();
    metadata.set('grpc-status-details-bin', Buffer.from(status));
  }
  return { code, details: message, metadata };
}

const service = {
  Export: {
    path: '/opentelemetry.proto.collector.metrics.v1.MetricsService/Export',
    requestStream: false,
    responseStream: false,
    requestSerialize: (m) => Buffer.from(Request.encode(m).finish()),
    requestDeserialize: (b) => Request.decode(b),
    responseSerialize: (m) => Buffer.from(Response.encode(m).finish()),
    responseDeserialize: (b) => Response.decode(b),
  },
};

const server = new grpc.Server();
server.addService(service, {
  Export(call, callback) {
    const answer = answers.length === 0 ? 'ok' : answers[Math.min(calls, answers.length - 1)];
    calls++;
    const problem = Request.verify(call.request);
    const md = call.metadata.getMap();
    const line = {
      answer,
      invalid: problem || null,
      userAgent: md['user-agent'] || null,
      // grpc-js takes grpc-timeout and grpc-encoding out of the metadata: the deadline they set, in ms from now.
      deadlineMs: Number.isFinite(Number(call.getDeadline())) ? Number(call.getDeadline()) - Date.now() : null,
      request: Request.toObject(call.request, { longs: String, enums: String, defaults: true, arrays: true }),
    };
    process.stdout.write('CALL ' + JSON.stringify(line) + '\n');
    const [kind, arg] = answer.split(':');
    switch (kind) {
      case 'ok': return callback(null, {});
      case 'unavailable': return callback(failure(grpc.status.UNAVAILABLE, 'collector busy'));
      case 'unavailable-retry': return callback(failure(grpc.status.UNAVAILABLE, 'collector busy', Number(arg)));
      case 'exhausted': return callback(failure(grpc.status.RESOURCE_EXHAUSTED, 'message too large'));
      case 'exhausted-retry': return callback(failure(grpc.status.RESOURCE_EXHAUSTED, 'over quota', Number(arg)));
      case 'invalid': return callback(failure(grpc.status.INVALID_ARGUMENT, 'rejected'));
      case 'hang': return undefined;
      default: return callback(failure(grpc.status.INTERNAL, 'unknown test answer ' + answer));
    }
  },
});

server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, port) => {
  if (error) {
    process.stderr.write(String(error) + '\n');
    process.exit(1);
  }
  process.stdout.write('PORT ' + port + '\n');
});
