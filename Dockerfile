# pod-rebalancer as a container image: functions-framework serving main.py's `rebalance`, as Cloud
# Run functions does, for the Helm chart (deploy/helm) and any cluster.
#
#   docker build -t pod-rebalancer .
#
# Two stages: the build stage makes the virtualenv with scripts/install-runtime (the very command
# tests/image runs, then serves the function from); the runtime stage holds that virtualenv and
# the code, nothing else. It runs as a non-root user and needs no write to its root filesystem
# (bytecode is compiled here; mount a writable /tmp for gunicorn, as the chart does).
# The base is the Python the tests run on: 3.11.
FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
COPY requirements.txt constraints.txt ./
COPY scripts/install-runtime scripts/install-runtime
RUN scripts/install-runtime /opt/venv

FROM python:3.11.14-slim-bookworm
# XDG_RUNTIME_DIR: gunicorn (under functions-framework) puts its control socket there, else under
# $HOME, which is the read-only / for a user without a passwd entry.
ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 XDG_RUNTIME_DIR=/tmp
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY main.py main.py
COPY rebalancer rebalancer
RUN python -m compileall -q /app
USER 65532:65532
EXPOSE 8080
CMD ["functions-framework", "--source", "/app/main.py", "--target", "rebalance", "--port", "8080"]
