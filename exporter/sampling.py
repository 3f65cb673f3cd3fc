"""Sampling decides what goes to a collector or Jaeger, never what reaches the tables.

A sampler that drops a span would also drop its ``api_request_logs`` row or ``job_outcomes`` row
(a caller's not-sampled ``traceparent``, ``OTEL_TRACES_SAMPLER=traceidratio``). ``RecordAll``
keeps the configured sampler's decision for the *sampled* flag, so exporters to a collector
(which take only sampled spans) see exactly what they would have, but turns its "drop" into
"record only": the span still runs, ends and reaches the tables' processor, which takes
sampled and not-sampled spans alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes


class RecordAll(Sampler):
    """``configured``'s decision, with DROP turned into RECORD_ONLY."""

    def __init__(self, configured: Sampler) -> None:
        self.configured = configured

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        result = self.configured.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )
        if result.decision is not Decision.DROP:
            return result
        # The result's attributes become the span's: a dropping sampler returns none, so the
        # span's own attributes (method, path...) are put back, with any the sampler added.
        kept = {**(attributes or {}), **(result.attributes or {})}
        return SamplingResult(Decision.RECORD_ONLY, kept, result.trace_state)

    def get_description(self) -> str:
        return f"RecordAll{{{self.configured.get_description()}}}"


def record_all(provider: TracerProvider) -> None:
    """Make an application's own provider record every span from now on (its exporters still get
    only what its sampler samples). Tracers it already made keep their sampler; ours is made
    after this. The SDK offers no setter: the sampler it keeps (``sampler`` in the 1.x SDK, which
    its tracers are given) is replaced in place."""
    current = provider.sampler
    if not isinstance(current, RecordAll):
        provider.sampler = RecordAll(current)


def configured_sampler() -> Sampler:
    """The sampler the standard ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` name (the
    SDK's default, parent-based always-on, when unset), wrapped in ``RecordAll``. The SDK reads
    these variables in a private helper; it is what ``TracerProvider()`` itself calls."""
    return RecordAll(sampling._get_from_env_or_default())
