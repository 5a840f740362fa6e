// receiver.js: a test-only OTLP trace receiver on loopback. It decodes every
// ExportTraceServiceRequest lanternd sends, over gRPC (@grpc/grpc-js) and over
// HTTP/protobuf (POST /v1/traces), with the generated code the official
// @opentelemetry/otlp-transformer package ships, and appends each decoded request
// as one JSON line to --out (ids as hex, 64-bit integers as strings).
//
//   node receiver.js --out FILE [--grpc-port N] [--http-port N]
//                    [--fail-first N] [--partial N] [--tls-cert PEM --tls-key PEM]
// --fail-first N answers the first N requests with UNAVAILABLE (gRPC) or 503 (HTTP)
// so a test can watch retries; --partial N reports N rejected spans (partial success)
// on every answer; --tls-cert and --tls-key serve both ports over TLS only (gRPC over
// TLS, HTTPS). Prints "ready GRPC_PORT HTTP_PORT" once both listen.
'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');
const grpc = require('@grpc/grpc-js');
const root = require('@opentelemetry/otlp-transformer/build/src/generated/root');

const svc = root.opentelemetry.proto.collector.trace.v1;
const args = {};
for (let i = 2; i < process.argv.length; i += 2)
  args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const out = args.out;
let failLeft = Number(args['fail-first'] || 0);
const partial = Number(args.partial || 0);
const tls = args['tls-cert'] ?
  { cert: fs.readFileSync(args['tls-cert']), key: fs.readFileSync(args['tls-key']) } : null;
let seq = 0;

function hexify(o) {
  if (Array.isArray(o)) return o.map(hexify);
  if (o && typeof o === 'object') {
    const r = {};
    for (const [k, v] of Object.entries(o)) {
      if ((k === 'traceId' || k === 'spanId' || k === 'parentSpanId') && typeof v === 'string')
        r[k] = Buffer.from(v, 'base64').toString('hex');
      else r[k] = hexify(v);
    }
    return r;
  }
  return o;
}

// Decodes, records and returns [failed, responseBytes].
function receive(buf, transport) {
  const n = ++seq;
  if (failLeft > 0) {
    failLeft--;
    fs.appendFileSync(out, JSON.stringify({ seq: n, transport, refused: true }) + '\n');
    return [true, null];
  }
  const req = svc.ExportTraceServiceRequest.decode(buf);
  const obj = svc.ExportTraceServiceRequest.toObject(req, {
    longs: String, bytes: String, enums: Number, defaults: false, oneofs: false,
  });
  fs.appendFileSync(out, JSON.stringify({ seq: n, transport, request: hexify(obj) }) + '\n');
  const resp = svc.ExportTraceServiceResponse.create(
    partial ? { partialSuccess: { rejectedSpans: partial, errorMessage: 'test: rejected' } } : {});
  return [false, Buffer.from(svc.ExportTraceServiceResponse.encode(resp).finish())];
}

const server = new grpc.Server();
server.addService({
  Export: {
    path: '/opentelemetry.proto.collector.trace.v1.TraceService/Export',
    requestStream: false,
    responseStream: false,
    requestSerialize: (b) => b,
    requestDeserialize: (b) => b,
    responseSerialize: (b) => b,
    responseDeserialize: (b) => b,
  },
}, {
  Export: (call, cb) => {
    let r;
    try {
      r = receive(call.request, 'grpc');
    } catch (e) {
      return cb({ code: grpc.status.INVALID_ARGUMENT, details: String(e) });
    }
    if (r[0]) return cb({ code: grpc.status.UNAVAILABLE, details: 'test: refused' });
    cb(null, r[1]);
  },
});

function onHttp(req, res) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (req.method !== 'POST' || req.url !== '/v1/traces' ||
        req.headers['content-type'] !== 'application/x-protobuf') {
      res.writeHead(404);
      return res.end();
    }
    let r;
    try {
      r = receive(Buffer.concat(chunks), 'http');
    } catch (e) {
      res.writeHead(400);
      return res.end(String(e));
    }
    if (r[0]) {
      res.writeHead(503);
      return res.end();
    }
    res.writeHead(200, { 'Content-Type': 'application/x-protobuf' });
    res.end(r[1]);
  });
}
const httpServer = tls ? https.createServer(tls, onHttp) : http.createServer(onHttp);

const creds = tls ?
  grpc.ServerCredentials.createSsl(null, [{ cert_chain: tls.cert, private_key: tls.key }], false) :
  grpc.ServerCredentials.createInsecure();
server.bindAsync(`127.0.0.1:${args['grpc-port'] || 0}`, creds,
  (err, gport) => {
    if (err) throw err;
    httpServer.listen(Number(args['http-port'] || 0), '127.0.0.1', () => {
      process.stdout.write(`ready ${gport} ${httpServer.address().port}\n`);
    });
  });
process.on('SIGTERM', () => process.exit(0));
