# Build a wheel in one stage, install it in a slim runtime stage that runs as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /home/mediagate --create-home mediagate \
 && mkdir /data && chown mediagate /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
USER mediagate
WORKDIR /home/mediagate
# Configuration comes only from MEDIAGATE_* environment variables (see README).
ENV MEDIAGATE_DATA_DIR=/data PYTHONUNBUFFERED=1
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
# exec form: uvicorn is PID 1's child-free process and receives SIGTERM directly.
ENTRYPOINT ["mediagate", "serve", "--host", "0.0.0.0", "--port", "8000"]
