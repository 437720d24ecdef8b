# signalgate container image.
#   build stage:   builds the signalgate wheel from the source (nothing else is kept).
#   runtime stage: a slim, pinned Python with only that wheel and its dependencies installed,
#                  running as the unprivileged user signalgate (uid 10001).
# Config: mount your TOML at /etc/signalgate/signalgate.toml (volume /etc/signalgate).
# Data:   the SQLite outbox and the cookie key live in the volume /var/lib/signalgate.
# Defaults for a container (override with -e): listen on 0.0.0.0:8080 (server.port from the
# config), store at /var/lib/signalgate/signalgate.db; SIGNALGATE__<SECTION>__<KEY> variables
# override any scalar key of the config file.
ARG PYTHON_IMAGE=python:3.11.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY gateway ./gateway
COPY static_js ./static_js
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SIGNALGATE__SERVER__HOST=0.0.0.0 \
    SIGNALGATE__STORAGE__PATH=/var/lib/signalgate/signalgate.db
COPY --from=build /wheels /tmp/wheels
RUN python -m pip install --no-cache-dir /tmp/wheels/signalgate-*.whl \
 && rm -rf /tmp/wheels \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/signalgate --no-create-home \
      --shell /usr/sbin/nologin signalgate \
 && mkdir -p /var/lib/signalgate /etc/signalgate \
 && chown signalgate:signalgate /var/lib/signalgate \
 && chmod 0750 /var/lib/signalgate
VOLUME ["/var/lib/signalgate", "/etc/signalgate"]
WORKDIR /var/lib/signalgate
USER 10001:10001
EXPOSE 8080
# Unhealthy unless /healthz answers AND every configured loader and shim path serves its script.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
  CMD ["signalgate", "healthcheck", "--config", "/etc/signalgate/signalgate.toml"]
ENTRYPOINT ["signalgate"]
CMD ["run", "--config", "/etc/signalgate/signalgate.toml"]
