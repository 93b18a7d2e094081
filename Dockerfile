# One image for every service of the compose demo: proxy64 installed the README way
# (`pip install .`), plus tayga, NSD, iproute2 and curl for the nat64, dns, origin and
# client services. Build: docker compose build (or docker build -t proxy64-demo .).
#
# Build arguments, for building where Docker Hub or PyPI cannot be reached
# (tests/test_compose.py does both):
#   BASE_IMAGE  any Debian 12 image with python3 and pip on PATH (pip not externally
#               managed), for example a `debootstrap --variant=minbase bookworm` tree
#               with python3-pip, `docker import`ed.
#   WHEELHOUSE  a directory inside the build context holding a wheel for every
#               package pip needs (proxy64's dependencies and its build backend): pip
#               then installs from it alone (PIP_NO_INDEX). Empty: pip uses PyPI.
ARG BASE_IMAGE=python:3.12-slim-bookworm
FROM ${BASE_IMAGE}

RUN apt-get update \
    && apt-get install -y --no-install-recommends iproute2 tayga nsd curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . /src
ARG WHEELHOUSE=
RUN if [ -n "$WHEELHOUSE" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS="/src/$WHEELHOUSE"; fi \
    && pip install --no-cache-dir .

COPY docker /docker
RUN chmod +x /docker/*/*.sh
ENTRYPOINT ["/docker/proxy64/entrypoint.sh"]
CMD ["serve", "--help"]
