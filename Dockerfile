# Aidants Connect broker: production image.
#
#   docker build -t aidants-connect-broker .
#   docker run --rm -v broker-keys:/srv/broker/keys -e AC_ISSUER=https://… aidants-connect-broker broker keys init
#   docker run -v broker-keys:/srv/broker/keys -e AC_ISSUER=https://… -e DATABASE_URL=postgres://… \
#       -e REDIS_URL=redis://… -p 8000:8000 aidants-connect-broker
#
# See docs/deploy.md and docs/configuration.md.

# ---- 1. The `broker` binary ------------------------------------------------------
FROM rust:1-bookworm AS build

RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY broker ./broker
COPY conformance-tests ./conformance-tests
COPY fcsim ./fcsim
COPY bench/idp/loadgen ./bench/idp/loadgen
COPY migrations ./migrations

# The migrations are embedded in the binary at compile time.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p broker --locked \
    && install -m 0755 target/release/broker /usr/local/bin/broker

# ---- 2. DSFR assets --------------------------------------------------------------
FROM node:20-bookworm-slim AS assets

WORKDIR /app
# .npmrc sets ignore-scripts=true: no package runs code at install time.
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev \
    && test -f node_modules/@gouvfr/dsfr/dist/dsfr.min.css

# ---- 3. Runtime ------------------------------------------------------------------
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq5 libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 broker \
    && useradd --system --uid 10001 --gid broker --home-dir /srv/broker --no-create-home \
       --shell /usr/sbin/nologin broker

COPY --from=build /usr/local/bin/broker /usr/local/bin/broker
COPY --from=assets /app/node_modules/@gouvfr/dsfr/dist /srv/broker/assets

# keys/ is a volume: a new named volume takes this directory's owner and mode.
# data/ is only used when DATABASE_URL is left to its SQLite default.
RUN mkdir -p /srv/broker/keys /srv/broker/data \
    && chown broker:broker /srv/broker/keys /srv/broker/data \
    && chmod 0700 /srv/broker/keys /srv/broker/data

ENV AC_ENV=production \
    AC_LISTEN=0.0.0.0:8000 \
    AC_KEYS_DIR=/srv/broker/keys \
    AC_ASSETS_DIR=/srv/broker/assets

WORKDIR /srv/broker
USER broker
VOLUME ["/srv/broker/keys"]
EXPOSE 8000

# Liveness only (/healthz), with bash's /dev/tcp: the image needs no HTTP client.
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD bash -c 'exec 3<>"/dev/tcp/127.0.0.1/${AC_LISTEN##*:}" && printf "GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 && IFS= read -r status <&3 && case "$status" in *" 200 "*) exit 0 ;; *) exit 1 ;; esac'

CMD ["broker", "serve"]
