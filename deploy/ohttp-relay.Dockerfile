# syntax=docker/dockerfile:1
# An OHTTP relay (RFC 9458) for operators who run one for their users: the published
# `ohttp-relay` crate (by the payjoin project), the same one tidings' tests run, unchanged.
# It is stateless and speaks plain HTTP/1.1: put TLS in front of it (compose.ohttp.yaml
# uses Caddy). Configured by environment: PORT (default 3000) and GATEWAY_ORIGIN, the
# tidings relay's OHTTP gateway origin (`https://relay.example.com:7402`); it forwards
# every POST of `message/ohttp-req` to `$GATEWAY_ORIGIN/.well-known/ohttp-gateway`.
#   docker build -f deploy/ohttp-relay.Dockerfile -t ohttp-relay deploy

FROM rust:1.95-slim-bookworm AS builder
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo install ohttp-relay --version 0.0.11 --locked --root /usr/local

FROM debian:bookworm-slim
# ca-certificates: it reaches an https:// gateway with the system's roots (webpki).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10002 --home-dir /nonexistent --shell /usr/sbin/nologin ohttp
COPY --from=builder /usr/local/bin/ohttp-relay /usr/local/bin/ohttp-relay
USER 10002:10002
ENV PORT=3000 RUST_LOG=warn
EXPOSE 3000
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ohttp-relay"]
