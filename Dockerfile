# tally in a container: built with the same `cargo build --release --locked` CI runs,
# run as a non-root user on a small Debian image.
#
#   docker build -t tally .
#   docker run -p 3000:3000 -e TALLY_BIND=0.0.0.0:3000 -v tally-data:/var/lib/tally tally
#
# With no DATABASE_URL, tally keeps its embedded SQLite file in /var/lib/tally (the
# volume above: without it, the ledger dies with the container). For Postgres, set
# DATABASE_URL (see deploy/compose.yaml). Mount a catalogue at /etc/tally/tally.toml and
# set TALLY_CONFIG=/etc/tally/tally.toml.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tally \
    && cp target/release/tally /usr/local/bin/tally

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/tally --create-home tally
COPY --from=build /usr/local/bin/tally /usr/local/bin/tally
USER tally
WORKDIR /var/lib/tally
ENV DATABASE_URL=sqlite:///var/lib/tally/tally.db \
    TALLY_BIND=0.0.0.0:3000 \
    TALLY_LOG_FORMAT=json
VOLUME ["/var/lib/tally"]
EXPOSE 3000
# Ready means the database answers and is migrated; orchestrators stop with SIGTERM,
# which tally answers by finishing its requests (at most 30 s).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:3000/readyz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["tally"]
CMD ["serve"]
