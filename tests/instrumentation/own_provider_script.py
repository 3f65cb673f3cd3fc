"""An app that configured OpenTelemetry itself, then calls setup_telemetry (run as a subprocess:
a process sets its global provider once). Prints the spans the app's own exporter received."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from homepot_foundation.settings import Settings
from instrumentation import setup_telemetry

exporter = InMemorySpanExporter()  # stands for the app's Jaeger exporter
provider = TracerProvider(resource=Resource.create({"service.name": "app-own"}))
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

app = FastAPI()


@app.get("/work")
def work() -> dict[str, str]:
    with trace.get_tracer("app.code").start_as_current_span("child work"):
        return {"ok": "yes"}


settings = Settings(database_url=sys.argv[1], data_dir=Path(sys.argv[2]), export_delay_ms=50)
telemetry = setup_telemetry(app, service_name="homepot-api", settings=settings)
with TestClient(app) as client:
    client.get("/work")
telemetry.shutdown()
print(
    json.dumps(
        [
            {
                "name": span.name,
                "kind": span.kind.name,
                "trace_id": format(span.context.trace_id, "032x"),
                "span_id": span.context.span_id,
                "parent": span.parent.span_id if span.parent else None,
            }
            for span in exporter.get_finished_spans()
        ]
    )
)
