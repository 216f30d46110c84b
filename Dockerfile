# labelloop: the API (`labelloop serve`, the default), the migrations (`labelloop migrate`) and the
# Kafka joiner (`labelloop consume`) from one image. docker-compose.yml runs all three.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY consumers ./consumers
COPY migrations ./migrations
RUN pip install . && rm -rf /src

RUN useradd --create-home --home-dir /var/lib/labelloop --uid 10001 --user-group labelloop \
    && install -d -o labelloop -g 65534 -m 0750 /var/lib/labelloop/keys
# The working directory is where the default SQLite database (./labelloop.db) would be written.
WORKDIR /var/lib/labelloop
USER labelloop

ENV LABELLOOP_HOST=0.0.0.0 \
    LABELLOOP_PORT=8000
EXPOSE 8000

# No curl in the slim image: python's urllib; any error or non-2xx answer is unhealthy.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LABELLOOP_PORT', '8000') + '/healthz', timeout=4)"

CMD ["labelloop", "serve"]
