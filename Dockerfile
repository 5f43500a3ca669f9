# retry-worker container image.
#   docker build -t retry-worker .                          production image
#   docker build --build-arg EXTRAS=demo -t retry-worker .  with the embedded emulator (demo)
# BASE can be swapped for a mirrored or hardened Python 3.11+ image; PIP_CERT names a CA
# bundle (mounted as a build secret or copied in) when HTTPS goes through a proxy.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ARG EXTRAS=""
ARG PIP_CERT=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY worker ./worker
# Exactly the tested versions: constraints.txt pins every dependency.
RUN python3 -m venv /opt/retry-worker \
 && /opt/retry-worker/bin/pip install ${PIP_CERT:+--cert "$PIP_CERT"} \
        -c constraints.txt ".${EXTRAS:+[$EXTRAS]}" \
 && find /opt/retry-worker -name "__pycache__" -prune -exec rm -rf {} +

FROM ${BASE}
LABEL org.opencontainers.image.title="retry-worker" \
      org.opencontainers.image.description="Self-healing retries for AWS serverless dead-letter queues" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/retry-worker/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RETRY_WORKER_CONFIG_DIR=/etc/retry-worker
RUN groupadd --system --gid 10001 worker \
 && useradd --system --uid 10001 --gid worker --no-create-home --shell /usr/sbin/nologin worker
COPY --from=build /opt/retry-worker /opt/retry-worker
# base.yaml and the environment files (--env NAME, as on ECS); on Kubernetes the rendered
# config is mounted (/config/config.yaml) and passed with --config. Nothing is written at
# run time: a read-only root filesystem works.
COPY config/ /etc/retry-worker/
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
STOPSIGNAL SIGTERM
# Liveness (/livez), not readiness: an unreadable DLQ must not get every container replaced.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["retry-worker", "healthcheck"]
ENTRYPOINT ["retry-worker"]
CMD ["run"]
