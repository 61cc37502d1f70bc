# mediagate's container image: `docker build -t mediagate .`, then see docs/operations.md "Deploy".
#
# Two stages. `build` installs the dependencies into a virtualenv (their own layer, rebuilt only
# when pyproject.toml changes), then the package itself. The runtime stage copies only that
# virtualenv onto a slim Python and runs it as an unprivileged user; nothing in it needs a
# compiler or pip's cache.
#
# One uvicorn process per container. The gateway keeps some state per process (circuit
# breakers, upstream key cool-downs, its Prometheus registry), so instead of several workers in
# one container, run several containers (compose `--scale`, Kubernetes replicas/HPA) on a shared
# Redis: each replica is scraped on its own and its metrics stay exact.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/mediagate
ENV PATH=/opt/mediagate/bin:$PATH
WORKDIR /src
# Dependencies first: this layer survives every change to the code.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip install --no-cache-dir -r requirements.txt
# Then the package (no dependencies left to fetch). pip compiles everything to bytecode here,
# so the runtime never needs to write any (its root filesystem may be read-only).
COPY README.md ./
COPY mediagate ./mediagate
RUN pip install --no-cache-dir --no-deps .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mediagate" \
      org.opencontainers.image.description="Self-hosted OpenAI-compatible gateway for image and video generation"
# A fixed numeric uid/gid, so Kubernetes can check runAsNonRoot and own the data volume (fsGroup).
RUN groupadd --system --gid 10001 mediagate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
            --shell /usr/sbin/nologin mediagate \
 && mkdir -p /data \
 && chown 10001:10001 /data
COPY --from=build /opt/mediagate /opt/mediagate
# Configuration comes only from MEDIAGATE_* environment variables (see docs/configuration.md); nothing secret
# is baked in. Without an upstream configured the gateway serves its built-in simulator.
ENV PATH=/opt/mediagate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/data \
    MEDIAGATE_DATA_DIR=/data
WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# Exec form: `mediagate serve` (uvicorn) is PID 1 and gets SIGTERM itself. It stops accepting,
# lets requests in flight finish for MEDIAGATE_SHUTDOWN_TIMEOUT_S, then exits 0; give the
# orchestrator's grace period (compose stop_grace_period, terminationGracePeriodSeconds) more.
# `docker run IMAGE keys create NAME` runs the other subcommands.
ENTRYPOINT ["mediagate"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
