"""The request span's end-of-request attributes skip the SDK's validation only when it could
change nothing: the same attributes either way, and the SDK's limits still apply."""

from __future__ import annotations

from opentelemetry.sdk.trace import SpanLimits, TracerProvider

from instrumentation.middleware import set_checked_attributes

VALUES = {"http.response.status_code": 200, "user_agent.original": "wrk " * 20, "http.route": "/x"}


def test_the_fast_path_gives_what_set_attributes_gives() -> None:
    tracer = TracerProvider().get_tracer("t")
    fast, sdk = (
        tracer.start_span("a", attributes={"url.path": "/x"}),
        tracer.start_span("b", attributes={"url.path": "/x"}),
    )
    set_checked_attributes(fast, VALUES)
    sdk.set_attributes(VALUES)
    fast.end()
    sdk.end()
    assert dict(fast.attributes or {}) == dict(sdk.attributes or {}) == {"url.path": "/x", **VALUES}


def test_a_value_length_limit_is_still_applied() -> None:
    tracer = TracerProvider(span_limits=SpanLimits(max_span_attribute_length=8)).get_tracer("t")
    span = tracer.start_span("a")
    set_checked_attributes(span, VALUES)
    span.end()
    assert (span.attributes or {})["user_agent.original"] == "wrk wrk "


def test_an_attribute_count_limit_is_still_applied() -> None:
    tracer = TracerProvider(span_limits=SpanLimits(max_span_attributes=2)).get_tracer("t")
    span = tracer.start_span("a", attributes={"url.path": "/x"})
    set_checked_attributes(span, VALUES)
    span.end()
    assert len(span.attributes or {}) == 2


def test_an_ended_span_is_left_alone() -> None:
    span = TracerProvider().get_tracer("t").start_span("a")
    span.end()
    set_checked_attributes(span, VALUES)
    assert dict(span.attributes or {}) == {}
