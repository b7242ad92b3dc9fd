# settings-cdn: one image, two programs. The edge is the default command; run the publisher
# from the same image with `settings-cdn-publisher serve` (Config API + webhook) or any other
# publisher command. Configuration is environment variables only (see README).

# analytics-next's standalone build (served at /analytics.js/v1/{writeKey}/analytics.min.js,
# its chunks at /analytics-next/bundles/), from the npm package at the pinned version.
FROM python:3.12-slim AS analytics-next
ARG ANALYTICS_NEXT_VERSION=1.84.3
RUN apt-get update \
 && apt-get install -y --no-install-recommends npm \
 && cd /tmp \
 && npm pack --silent "@segment/analytics-next@${ANALYTICS_NEXT_VERSION}" \
 && tar -xzf "segment-analytics-next-${ANALYTICS_NEXT_VERSION}.tgz" \
 && mkdir /analytics-next \
 && cp package/dist/umd/standalone.js package/dist/umd/*.bundle.*.js package/LICENSE* \
       /analytics-next/

# Python 3.11: the version requirements/runtime.lock is resolved for.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY requirements/runtime.lock ./requirements/
COPY edge ./edge
COPY publisher ./publisher
COPY --from=analytics-next /analytics-next /app/analytics-next
# the exact versions the tests ran with (hashes checked), then the project without resolving
RUN pip install --require-hashes -r requirements/runtime.lock \
 && pip install --no-deps . \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin settings-cdn \
 && mkdir /data && chown settings-cdn /data

USER settings-cdn
# Inside a container the servers must listen on all interfaces; REDIS_URL must be given.
ENV EDGE_HOST=0.0.0.0 \
    EDGE_PORT=8080 \
    PUBLISHER_HOST=0.0.0.0 \
    PUBLISHER_PORT=8081 \
    PUBLISHER_DB=/data/settings-cdn.db \
    EDGE_ASSETS_DIR=/data/assets \
    EDGE_ANALYTICS_JS=/app/analytics-next/standalone.js
VOLUME ["/data"]
EXPOSE 8080 8081
# Probes: the edge answers GET /healthz and /readyz on EDGE_PORT.
CMD ["settings-cdn-edge"]
