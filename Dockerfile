# One image for the wheelfarm index server and its build workers.
#
#   docker build -t wheelfarm .
#   docker run -p 8080:8080 -v wheelfarm-data:/var/lib/wheelfarm wheelfarm
#   docker run -v /var/run/docker.sock:/var/run/docker.sock ... wheelfarm \
#     wheelfarm worker --server http://index:8080 --token ... --runner docker
#
# (docker-compose.yml shows the whole set-up: server, worker, PostgreSQL and S3.)
#
# BASE_IMAGE needs python3 (3.11+) with venv; where no registry is reachable, pass a
# locally made one (e.g. localhost/debian-12-py3.11-base, see builder/images/).
# The `server` stage is everything but the Docker CLI; the last stage adds the CLI (from
# DOCKER_CLI_IMAGE) that `wheelfarm worker --runner docker` drives.
ARG BASE_IMAGE=docker.io/library/python:3.12-slim-bookworm
ARG DOCKER_CLI_IMAGE=docker.io/library/docker:27-cli

FROM ${BASE_IMAGE} AS server

ARG PIP_INDEX_URL=https://pypi.org/simple/
ARG PIP_CERT=
# Offline builds: wheels of the dependencies (and of setuptools, the build backend) in a
# folder mounted at build time, e.g. podman build --volume "$PWD/wheels:/wheels:ro"
# --build-arg PIP_FIND_LINKS=/wheels --build-arg PIP_NO_INDEX=1 (tests/test_image.py).
ARG PIP_FIND_LINKS=
ARG PIP_NO_INDEX=0
# The server extra (Flask, SQLAlchemy, gunicorn, psycopg, boto3; the client's commands, the
# worker's included, need only the base dependencies). Add "fast" (gunicorn's C HTTP parser,
# 6-9% less CPU a request) when the base image has a C compiler or PIP_FIND_LINKS holds a
# gunicorn_h1c wheel: it is published as an sdist.
ARG EXTRAS=server
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY pyproject.toml README.md /src/
COPY client /src/client
COPY index_server /src/index_server
COPY builder /src/builder
COPY platforms /src/platforms
COPY storage /src/storage
# The data folder is not the user's home: no dotfiles in the volume.
RUN python3 -m venv /opt/wheelfarm \
 && PIP_INDEX_URL="$PIP_INDEX_URL" PIP_CERT="$PIP_CERT" PIP_FIND_LINKS="$PIP_FIND_LINKS" \
    PIP_NO_INDEX="$PIP_NO_INDEX" \
    /opt/wheelfarm/bin/pip install --no-cache-dir "/src[$EXTRAS]" \
 && rm -rf /src \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /var/lib/wheelfarm \
    --shell /usr/sbin/nologin wheelfarm \
 && install -d -o wheelfarm -g wheelfarm -m 0750 /var/lib/wheelfarm

ENV PATH=/opt/wheelfarm/bin:$PATH \
    WHEELFARM_DATA_DIR=/var/lib/wheelfarm
USER wheelfarm
WORKDIR /var/lib/wheelfarm
VOLUME ["/var/lib/wheelfarm"]
EXPOSE 8080
# (Docker keeps HEALTHCHECK; Podman only with `podman build --format docker`.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
CMD ["wheelfarm", "serve", "--host", "0.0.0.0", "--port", "8080"]

FROM ${DOCKER_CLI_IMAGE} AS docker-cli

# The default image: the server stage plus the Docker CLI (static binaries) for workers.
FROM server
COPY --from=docker-cli /usr/local/bin/docker /usr/local/bin/docker
COPY --from=docker-cli /usr/local/libexec/docker/cli-plugins/docker-buildx \
     /usr/local/libexec/docker/cli-plugins/docker-buildx
