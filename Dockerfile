# syntax=docker/dockerfile:1
# The inferfleet operator image: `inferfleet run` as a non-root user, nothing but the Python
# runtime and the installed package in the final stage.
#
# The base is pinned by tag (a Python patch release on Debian bookworm); pin it by digest too
# (python:3.11.13-slim-bookworm@sha256:...) where the registry can be reached when this changes,
# and let Dependabot/Renovate bump it.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --- build: install the package and its pinned dependencies into a virtualenv ----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/inferfleet
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so that a source change reuses this layer.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > requirements.txt \
 && /opt/inferfleet/bin/pip install -r requirements.txt
COPY README.md ./
COPY operator ./operator
# Then drop the installer from the environment the final stage copies, and precompile bytecode
# (the running container cannot write it).
RUN /opt/inferfleet/bin/pip install --no-deps . \
 && /opt/inferfleet/bin/python -m pip uninstall -q -y pip \
 && /opt/inferfleet/bin/python -m compileall -q /opt/inferfleet

# --- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="inferfleet" \
      org.opencontainers.image.description="Kubernetes operator for fleets of LLM inference servers on GPUs" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/inferfleet/inferfleet"
# A named user with the UID the chart runs as (runAsUser: 65532), so tools that look the user
# up (getpass) work; no home directory, no shell login.
RUN groupadd --system --gid 65532 inferfleet \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin inferfleet
COPY --from=build /opt/inferfleet /opt/inferfleet
# The root filesystem is read-only in the cluster: never write bytecode, log unbuffered.
ENV PATH=/opt/inferfleet/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
# 8080: liveness (/healthz); 8081: Prometheus metrics (/metrics).
EXPOSE 8080 8081
ENTRYPOINT ["inferfleet"]
CMD ["run"]
