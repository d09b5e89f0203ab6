# One image for the wheelfarm index server and its build workers.
#
#   docker build -t wheelfarm .
#   docker run -p 8080:8080 -v wheelfarm-data:/var/lib/wheelfarm wheelfarm
#   docker run wheelfarm wheelfarm worker --server http://index:8080 --token ... --runner docker
#
# BASE_IMAGE needs python3 (3.11+) with venv; where no registry is reachable, pass a
# locally made one (e.g. localhost/debian-12-py3.11-base, see builder/images/).
ARG BASE_IMAGE=docker.io/library/python:3.12-slim-bookworm
FROM ${BASE_IMAGE}

ARG PIP_INDEX_URL=https://pypi.org/simple/
ARG PIP_CERT=
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY pyproject.toml README.md /src/
COPY index_server /src/index_server
COPY builder /src/builder
COPY platforms /src/platforms
COPY storage /src/storage
RUN python3 -m venv /opt/wheelfarm \
 && PIP_INDEX_URL="$PIP_INDEX_URL" PIP_CERT="$PIP_CERT" \
    /opt/wheelfarm/bin/pip install --no-cache-dir "/src[postgres,s3]" \
 && rm -rf /src \
 && useradd --system --uid 10001 --create-home --home-dir /var/lib/wheelfarm wheelfarm

ENV PATH=/opt/wheelfarm/bin:$PATH \
    WHEELFARM_DATA_DIR=/var/lib/wheelfarm
USER wheelfarm
WORKDIR /var/lib/wheelfarm
VOLUME ["/var/lib/wheelfarm"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
CMD ["wheelfarm", "serve", "--host", "0.0.0.0", "--port", "8080"]
