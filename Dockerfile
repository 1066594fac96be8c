# The prediction server's image: Gunicorn serving wsgi.py, as a non-root user, on a read-only root.
#   docker build -t prediction-server .                        (demo models trained into the image)
#   docker build --build-arg DEMO_MODELS=0 -t prediction-server .   (models come from a volume)
#   docker run --read-only --tmpfs /tmp --tmpfs /app/var -p 8000:8000 \
#       -e API_KEYS_FILE=/run/secrets/keys.json prediction-server        (the image's demo models)
# Your own models, packaged on a host with its own DATABASE_URL, name audit records of that store:
# keep the container's store in a volume and adopt them into it once (servers refuse them until then):
#   docker run --rm -v "$PWD/artifacts:/app/artifacts" -v prediction-var:/app/var prediction-server \
#       python -m service registry adopt --all --reason "packaged on <host>"
#   docker run --read-only --tmpfs /tmp -v prediction-var:/app/var -v "$PWD/artifacts:/app/artifacts" ...
# Settings are the app's environment variables (see the README); docker-compose.yml and
# deploy/kubernetes/ run it with PostgreSQL, Nginx, Prometheus and Grafana.

# One Python for both stages, so compiled wheels built in the first run in the second.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: a virtualenv with the pinned dependencies, and the demo models -----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
# Every dependency, transitive ones too, is pinned in requirements.lock with the sha256 of its files
# (make lock), so pip refuses anything else; each ships as a wheel: no compiler in the image.
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock
WORKDIR /app
COPY gunicorn.conf.py wsgi.py ./
COPY service/ service/
COPY deploy/container/serve deploy/container/serve
# pip compiled the dependencies; the server's own modules are compiled here, since the image's root
# is read-only and PYTHONDONTWRITEBYTECODE is set: unchecked-hash, as nothing in the image changes.
RUN /opt/venv/bin/python -m compileall -q --invalidation-mode unchecked-hash gunicorn.conf.py wsgi.py service
# 1: train the demo models (breast-cancer, diabetes) into /app/artifacts at build, from data that
# scikit-learn ships, so the image answers out of the box. 0: an empty registry; mount yours.
# --no-audit: the build has no audit trail worth naming (its store would be thrown away with this
# stage), and a history naming records of that store is refused by every server until adopted,
# which a read-only container cannot do. So the history names none, and the store each container
# uses anchors the image's registry.json as it is on its first read (logged, recorded).
ARG DEMO_MODELS=1
RUN mkdir -p artifacts && if [ "$DEMO_MODELS" = "1" ]; then \
      /opt/venv/bin/python -m service train-demo --no-audit --artifacts-dir artifacts; fi

# -- runtime: the virtualenv and the code, nothing else --------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can check it and volumes can be chowned to it.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /app --shell /usr/sbin/nologin app
# pg_dump and pg_restore for `python -m service backup` / `restore` on a PostgreSQL store (the
# Kubernetes CronJob runs this image). pg_dump refuses a server newer than itself: Debian bookworm's
# major, 15, is the one the tests run and docker-compose.yml serves; a newer server needs a newer
# client (PGDG's postgresql-client-NN). The major is the pin that matters; Debian's security updates
# of it are taken at each build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client-15 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
# The registry's registry.json changes at run time (labels, rollouts): the app's user owns it, and a
# named volume mounted here starts as a copy of it (the demo models, when built with them).
COPY --from=build --chown=10001:10001 /app/artifacts /app/artifacts
# Mount points for what is written at run time, owned by the app's user so that a volume or tmpfs
# mounted there starts with that owner: var/ (SQLite prediction log by default) and the folder
# for Gunicorn's Unix socket when Nginx shares it (docker-compose.yml).
RUN install -d -o 10001 -g 10001 /app/var /run/prediction-server \
 && ln -s /app/deploy/container/serve /usr/local/bin/serve
WORKDIR /app
# HOST 0.0.0.0: the container's own interface; Gunicorn refuses a non-loopback bind without
# API_KEYS_FILE (or ALLOW_UNAUTHENTICATED=1), and without signature checks on the models
# (MODEL_TRUSTED_KEYS: mounted public keys; or ALLOW_UNSIGNED_MODELS=1 for the unsigned demo
# models, logged as a warning), so both are given at run time.
# var/ (SQLite prediction log by default) and the metrics folder are the only places written:
# mount a tmpfs (or a volume) on /app/var, /tmp (Gunicorn's worker heartbeat files) and keep
# /dev/shm, a tmpfs in every container, for Prometheus' per-worker files.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    ARTIFACTS_DIR=/app/artifacts \
    DATABASE_URL=sqlite:////app/var/predictions.db \
    PROMETHEUS_MULTIPROC_DIR=/dev/shm/prometheus
USER 10001:10001
EXPOSE 8000
# Liveness for Docker itself (Kubernetes uses its own probes): the process answers /healthz, on the
# port the config binds (PORT, 8000 by default, or the cloud platform's: see the README on Vertex AI,
# Azure ML and SageMaker). Python, because the slim image has no curl; 30 s start period for the model load.
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; from service.config import Config; urllib.request.urlopen('http://127.0.0.1:%d/healthz' % Config.from_env().port, timeout=2)"]
# Exec form: Gunicorn is PID 1 and gets SIGTERM itself, so `docker stop` and Kubernetes drain
# requests in flight (graceful_timeout in gunicorn.conf.py) instead of being killed by a shell.
# A CMD, not an ENTRYPOINT, so `docker run IMAGE python -m service list` runs the CLI, and
# `docker run IMAGE serve` (SageMaker's way of starting an image) runs deploy/container/serve.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:application"]
