#!/usr/bin/env bash
# What the tests need from the machine, installed or started when missing:
# PostgreSQL up on 127.0.0.1:5432 when installed, Chromium + ChromeDriver (browser test), wrk (benchmarks),
# pgbouncer (the transaction-pooler test; Debian puts it in /usr/sbin).
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
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

# The Node.js client of tests/e2e/test_node_client.py: its packages, exactly as locked, installed
# when missing or older than the lock file. Never fails: without them that test is skipped.
node_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/e2e/node"
if [ -f "$node_dir/package-lock.json" ]; then
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        echo "warning: node or npm missing; the Node.js client test will be skipped" >&2
    elif [ ! -f "$node_dir/node_modules/.package-lock.json" ] \
        || [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; then
        echo "installing the Node.js packages of tests/e2e/node (npm ci)"
        if npm ci --prefix "$node_dir" --no-audit --no-fund; then
            touch "$node_dir/node_modules/.package-lock.json"
        else
            # Half installed would make the test fail instead of skipping with its reason.
            rm -rf "$node_dir/node_modules"
            echo "warning: npm ci failed; the Node.js client test will be skipped" >&2
        fi
    fi
fi
