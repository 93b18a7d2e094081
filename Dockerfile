# One image for every service of the compose demo: proxy64 installed the README way
# (`pip install .`), plus tayga, NSD, iproute2 and curl for the nat64, dns, origin and
# client services. Build: docker compose build (or docker build -t proxy64-demo .).
FROM python:3.12-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends iproute2 tayga nsd curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . /src
RUN pip install --no-cache-dir .

COPY docker /docker
RUN chmod +x /docker/*/*.sh
ENTRYPOINT ["/docker/proxy64/entrypoint.sh"]
CMD ["serve", "--help"]
