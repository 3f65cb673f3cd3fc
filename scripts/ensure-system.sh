#!/usr/bin/env bash
# What the tests need from the machine, installed or started when missing:
# PostgreSQL up on 127.0.0.1:5432 when installed, Chromium + ChromeDriver (browser test), wrk (benchmarks).
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${missing[*]} (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "warning: ${missing[*]} missing and cannot be installed here; their tests will be skipped" >&2
    fi
fi

# PostgreSQL: the local server, started when it is installed but down. Without one the tests
# use a throwaway embedded PostgreSQL (tests/support/postgres_server.py), so this never fails.
if [ -z "${HOMEPOT_ANALYTICS_TEST_ADMIN_URL:-}" ] && [ "${HOMEPOT_ANALYTICS_TEST_POSTGRES:-auto}" != embedded ]; then
    if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
        if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ] && [ -n "$(ls /etc/postgresql)" ]; then
            echo "starting PostgreSQL"
            pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
            for _ in $(seq 1 30); do
                pg_isready -q -h 127.0.0.1 -p 5432 && break
                sleep 1
            done
        fi
    fi
    if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
        echo "no PostgreSQL server on 127.0.0.1:5432: the tests will start a throwaway embedded PostgreSQL" >&2
    fi
fi
