'use strict';
// An Express service instrumented with the official OpenTelemetry Node SDK, as its users run it:
// the SDK is started before express is loaded, with the http and express instrumentations and
// one OTLP trace exporter (a BatchSpanProcessor, made by the SDK from `traceExporter`).
// tests/e2e/test_node_client.py runs it against the analytics service's OTLP/HTTP sink.
//
// Environment (the standard OTEL_* variables are read by the SDK itself):
//   PORT                                 port to listen on (loopback)
//   OTLP_FORMAT                          proto (exporter-trace-otlp-proto) or json (exporter-trace-otlp-http)
//   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT   e.g. http://127.0.0.1:4318/v1/traces
//   OTEL_SERVICE_NAME                    the resource's service.name
//   OTEL_BSP_SCHEDULE_DELAY              batch delay in ms (short in the test)
//   OTEL_METRICS_EXPORTER / OTEL_LOGS_EXPORTER   `none` unless a collector takes them

const { NodeSDK } = require('@opentelemetry/sdk-node');
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');
const { ExpressInstrumentation } = require('@opentelemetry/instrumentation-express');

function traceExporter(format) {
  switch (format) {
    case 'proto': {
      const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
      return new OTLPTraceExporter();
    }
    case 'json': {
      const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http');
      return new OTLPTraceExporter();
    }
    default:
      throw new Error(`OTLP_FORMAT must be proto or json, not ${JSON.stringify(format)}`);
  }
}

const sdk = new NodeSDK({
  traceExporter: traceExporter(process.env.OTLP_FORMAT || 'proto'),
  instrumentations: [new HttpInstrumentation(), new ExpressInstrumentation()],
});
sdk.start();

// Loaded after sdk.start(), so that the instrumentations patch them.
const { trace, SpanStatusCode } = require('@opentelemetry/api');
const express = require('express');

const tracer = trace.getTracer('homepot-node-e2e');
const devices = { dev_001: 'online', dev_002: 'offline' };
const app = express();

app.get('/health', (req, res) => {
  res.json({ status: 'ok' });
});

app.get('/devices/:id', (req, res) => {
  const state = devices[req.params.id];
  if (state === undefined) {
    res.status(404).json({ detail: `Device ${req.params.id} not found` });
    return;
  }
  res.json({ device_id: req.params.id, state });
});

app.get('/crash', () => {
  throw new Error('boom from node');
});

app.post('/jobs/:id', (req, res) => {
  // One span per job run, with this project's attribute keys (exporter/conventions.py).
  const started = Date.now();
  tracer.startActiveSpan('job firmware_update', (span) => {
    try {
      span.setAttributes({
        'homepot.job.id': req.params.id,
        'homepot.job.type': 'firmware_update',
        'homepot.device.id': String(req.query.device || 'dev_001'),
        'homepot.job.initiated_by': 'system',
      });
      // ... the work of the job ...
      span.setAttributes({
        'homepot.job.status': 'success',
        'homepot.job.duration_ms': Date.now() - started,
      });
      span.setStatus({ code: SpanStatusCode.OK });
    } finally {
      span.end();
    }
  });
  res.json({ job_id: req.params.id, status: 'success' });
});

const server = app.listen(Number(process.env.PORT || 3000), '127.0.0.1', () => {
  console.log('listening');
});

let stopping = false;
process.on('SIGTERM', async () => {
  if (stopping) return;
  stopping = true;
  let code = 0;
  try {
    await sdk.shutdown(); // flushes the batch processor: every span is exported before exit
  } catch (err) {
    console.error('telemetry shutdown failed', err);
    code = 1;
  }
  server.close(() => process.exit(code));
  server.closeAllConnections();
});
