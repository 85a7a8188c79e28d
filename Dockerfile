# sidecar: multi-stage image. The build stage installs the package into a virtualenv; the final
# stage copies only that virtualenv onto a clean slim base, so pip caches, sources and any build
# tooling stay behind. Build:  docker build -t sidecar .
# Run:    docker run -p 4433:4433 -v "$PWD/sidecar.yaml:/etc/sidecar/sidecar.yaml:ro" \
#           -e SIDECAR_SECRETS__COOKIE='[a-long-random-secret-of-32-chars]' sidecar
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/sidecar
WORKDIR /src
# Every runtime dependency ships as a manylinux wheel, so no compiler is needed even here.
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
RUN /opt/sidecar/bin/pip install --no-cache-dir .

FROM ${PYTHON_IMAGE}
# xmlsec1 checks SAML signatures (selfservice.methods.saml); pysaml2 runs it as a child process.
# Pinned to the version of the base image's Debian release (bookworm).
RUN apt-get update \
    && apt-get install -y --no-install-recommends xmlsec1=1.2.37-2 \
    && rm -rf /var/lib/apt/lists/*
# A fixed numeric uid so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 sidecar \
    && useradd --system --uid 10001 --gid sidecar --home-dir /var/lib/sidecar --create-home \
       --shell /usr/sbin/nologin sidecar
COPY --from=build /opt/sidecar /opt/sidecar
ENV PATH=/opt/sidecar/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The working directory is the sidecar user's: the default dsn (sqlite://sidecar.db) lands here.
WORKDIR /var/lib/sidecar
USER 10001:10001
EXPOSE 4433 4434
# The admin listener binds 127.0.0.1 by default, which is exactly where the check runs. It asks
# "alive", not "ready": an unreachable Redis must not make Docker restart a healthy process.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/alive' % os.environ.get('SIDECAR_SERVE__ADMIN__PORT', '4434'), timeout=2)"]
# Configuration: a file mounted at /etc/sidecar/sidecar.yaml plus SIDECAR_* environment variables
# (SIDECAR_A__B overrides key a.b; DSN overrides dsn). Extra arguments (--workers 2) go after it.
ENTRYPOINT ["sidecar", "serve", "-c", "/etc/sidecar/sidecar.yaml"]
CMD []
