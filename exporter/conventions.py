"""Attribute keys and event names shared by the instrumentation (which sets them) and the
mapping (which reads them). Standard OpenTelemetry keys come first; ``homepot.*`` keys are ours.

A service in another language joins by setting the same keys on its spans and log records.
"""

from __future__ import annotations

# --- Resource -------------------------------------------------------------------------------
SERVICE_NAME = "service.name"
SERVICE_VERSION = "service.version"
# The stable name first, then the one older SDKs and collectors still send.
DEPLOYMENT_ENVIRONMENT = ("deployment.environment.name", "deployment.environment")

# --- HTTP server spans: both the old and the stable semantic conventions --------------------
HTTP_METHOD = ("http.request.method", "http.method")
HTTP_STATUS_CODE = ("http.response.status_code", "http.status_code")
HTTP_ROUTE = "http.route"
HTTP_PATH = ("url.path", "http.target")
HTTP_URL = ("url.full", "http.url")
CLIENT_ADDRESS = ("client.address", "http.client_ip", "net.peer.ip", "net.sock.peer.addr")
USER_AGENT = ("user_agent.original", "http.user_agent")
REQUEST_BODY_SIZE = (
    "http.request.body.size",
    "http.request_content_length",
    "http.request_content_length_uncompressed",
)
RESPONSE_BODY_SIZE = (
    "http.response.body.size",
    "http.response_content_length",
    "http.response_content_length_uncompressed",
)
ERROR_TYPE = "error.type"
# The user: OTel's ``enduser.id`` (older) and ``user.id`` (newer semantic conventions).
USER_ID = ("enduser.id", "user.id")

# Ours: the error text of a 4xx/5xx response (HTTPException detail), set by our middleware.
HTTP_ERROR_MESSAGE = "homepot.http.error_message"

# --- Exceptions (span events and log records) -----------------------------------------------
EXCEPTION_EVENT = "exception"
EXCEPTION_TYPE = "exception.type"
EXCEPTION_MESSAGE = "exception.message"
EXCEPTION_STACKTRACE = "exception.stacktrace"

# --- Jobs: one span per job run --------------------------------------------------------------
JOB_ID = "homepot.job.id"
JOB_TYPE = "homepot.job.type"
JOB_STATUS = "homepot.job.status"
JOB_DURATION_MS = "homepot.job.duration_ms"
JOB_RETRY_COUNT = "homepot.job.retry_count"
JOB_INITIATED_BY = "homepot.job.initiated_by"
JOB_ERROR_CODE = "homepot.job.error_code"
JOB_ERROR_MESSAGE = "homepot.job.error_message"
JOB_STATUSES = ("success", "failed", "timeout", "cancelled")
# The words other job systems use for an outcome, as the spec's status they mean (compared in
# lowercase, with spaces and hyphens as "_"): HOMEPOT itself stores "completed", Celery
# "SUCCESS"/"FAILURE"/"REVOKED". A status found neither here nor in JOB_STATUSES ("pending",
# "partial") is stored as given, never turned into "failed".
JOB_STATUS_ALIASES: dict[str, str] = {
    # -> success
    "succeeded": "success",
    "successful": "success",
    "completed": "success",
    "complete": "success",
    "done": "success",
    "ok": "success",
    "finished": "success",
    "passed": "success",
    # -> failed
    "fail": "failed",
    "failure": "failed",
    "error": "failed",
    "errored": "failed",
    # -> timeout
    "timed_out": "timeout",
    "timedout": "timeout",
    "time_out": "timeout",
    # -> cancelled
    "canceled": "cancelled",
    "cancel": "cancelled",
    "aborted": "cancelled",
    "revoked": "cancelled",
}


def job_status(value: object) -> str | None:
    """The spec's status for a job status as reported: one of ``JOB_STATUSES`` or an alias of one
    (``"Completed"`` -> ``"success"``, in any case), else the value as given (``"pending"``);
    None when there is none (then the span's status decides)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    word = text.strip().lower().replace("-", "_").replace(" ", "_")
    if not word:
        return None
    if word in JOB_STATUSES:
        return word
    return JOB_STATUS_ALIASES.get(word, text)


# --- Devices -----------------------------------------------------------------------------------
DEVICE_ID = "homepot.device.id"
DEVICE_PREVIOUS_STATE = "homepot.device.previous_state"
DEVICE_NEW_STATE = "homepot.device.new_state"
DEVICE_CHANGED_BY = "homepot.device.changed_by"
DEVICE_REASON = "homepot.device.reason"

# --- Errors recorded on purpose ----------------------------------------------------------------
ERROR_CATEGORY = "homepot.error.category"
ERROR_SEVERITY = "homepot.error.severity"
ERROR_CODE = "homepot.error.code"
ERROR_ENDPOINT = "homepot.error.endpoint"
# What an error is grouped by besides its code and normalised message (a 5xx: its route).
ERROR_GROUP = "homepot.error.group"
ERROR_CATEGORIES = ("api", "database", "external_service", "validation", "job", "frontend", "other")
ERROR_SEVERITIES = ("critical", "error", "warning", "info")

# --- Frontend user activity --------------------------------------------------------------------
ACTIVITY_TYPE = "homepot.activity.type"
SESSION_ID = "homepot.session.id"
PAGE_URL = "homepot.page_url"
ELEMENT_ID = "homepot.element_id"
SEARCH_QUERY = "homepot.search_query"
DURATION_MS = "homepot.duration_ms"

# --- Shared ------------------------------------------------------------------------------------
# Free-form context, JSON-encoded (span attributes cannot hold maps): extra_data / context.
EXTRA = "homepot.extra"
# The identity of a log record, so a replayed or retried record is written once.
EVENT_ID = "homepot.event_id"

# Log record event names: they decide which table a log record goes to.
DEVICE_STATE_EVENT = "homepot.device_state_change"
ERROR_EVENT = "homepot.error"
USER_ACTIVITY_EVENT = "homepot.user_activity"

# Instrumentation scope of everything this project emits.
INSTRUMENTATION_NAME = "homepot_analytics"
