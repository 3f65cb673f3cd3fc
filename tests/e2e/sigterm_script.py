"""A process that instruments an app but runs no server: SIGTERM must still flush its telemetry.

Usage: python -m tests.e2e.sigterm_script COUNT  (HOMEPOT_ANALYTICS_* configure it). Records
COUNT device state changes and COUNT jobs, says "ready", then waits to be terminated.
"""

from __future__ import annotations

import sys
import time

from fastapi import FastAPI

from homepot_foundation.settings import Settings
from instrumentation import job_span, record_device_state, setup_telemetry


def main(count: int) -> None:
    setup_telemetry(FastAPI(), service_name="sigterm-script", settings=Settings())
    for n in range(count):
        record_device_state(f"dev-{n}", "online", "offline")
        with job_span(f"job-{n}", "health_check"):
            pass
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    time.sleep(60)  # the long export delay keeps everything queued until SIGTERM


if __name__ == "__main__":
    main(int(sys.argv[1]))
