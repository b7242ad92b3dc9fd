# settings-cdn: one image, two programs. The edge is the default command; run the publisher
# from the same image with `settings-cdn-publisher serve` (Config API + webhook) or any other
# publisher command. Configuration is environment variables only (see README).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY edge ./edge
COPY publisher ./publisher
RUN pip install . \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin settings-cdn \
 && mkdir /data && chown settings-cdn /data

USER settings-cdn
# Inside a container the servers must listen on all interfaces; REDIS_URL must be given.
ENV EDGE_HOST=0.0.0.0 \
    EDGE_PORT=8080 \
    PUBLISHER_HOST=0.0.0.0 \
    PUBLISHER_PORT=8081 \
    PUBLISHER_DB=/data/settings-cdn.db
VOLUME ["/data"]
EXPOSE 8080 8081
# Probes: the edge answers GET /healthz and /readyz on EDGE_PORT.
CMD ["settings-cdn-edge"]
