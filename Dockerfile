# The analytics service (query API + OTLP/HTTP sink + frontend intake) and the demo, one image:
#   docker build -t homepot-analytics .
#   docker run -p 8000:8000 -e HOMEPOT_ANALYTICS_DATABASE_URL=postgresql://... homepot-analytics
# docker-compose.yml runs it as `serve` (the service) and as `demo --rounds 0` (traffic).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY homepot_foundation ./homepot_foundation
COPY exporter ./exporter
COPY instrumentation ./instrumentation
COPY query_api ./query_api
COPY homepot_analytics ./homepot_analytics
# The service and the CLI (extra server); the database is the one HOMEPOT_ANALYTICS_DATABASE_URL names.
RUN python -m venv /opt/venv && /opt/venv/bin/pip install ".[server]"

FROM python:3.11-slim
# An unprivileged user owning /data (the exporter's spool, the pseudonym key): a named volume
# mounted there starts out with this ownership.
RUN useradd --create-home --uid 10001 homepot && mkdir /data && chown homepot:homepot /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOMEPOT_ANALYTICS_DATA_DIR=/data
USER homepot
WORKDIR /home/homepot
VOLUME ["/data"]
EXPOSE 8000
ENTRYPOINT ["homepot-analytics"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
