# rollcall-scanner: multi-stage build, non-root runtime, outbox in a volume.
#   docker build -f docker/scanner.Dockerfile -t rollcall-scanner .
#
# The BLE source talks to the host's BlueZ over the system D-Bus, so mount its
# socket and let the container's user through BlueZ's D-Bus policy (Debian and
# Raspberry Pi OS allow the `bluetooth` group; pass the host's gid of it):
#   docker run -d --name scanner --restart unless-stopped \
#     -v /run/dbus/system_bus_socket:/run/dbus/system_bus_socket \
#     --group-add "$(getent group bluetooth | cut -d: -f3)" \
#     -v scanner-data:/data -v /etc/rollcall-scanner/api-key:/run/secrets/api-key:ro \
#     -e ROLLCALL_SCANNER_SERVER=https://rollcall.example.org \
#     rollcall-scanner
#
# libdbus is built from source (libdbus-sys `vendored`), so neither stage needs it.
# Only the scanner is built: the crate does not depend on the server.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p rollcall-scanner \
 && cp target/release/rollcall-scanner /usr/local/bin/rollcall-scanner

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10002 --home-dir /data --shell /usr/sbin/nologin scanner \
 && mkdir -p /data && chown scanner:scanner /data
COPY --from=build /usr/local/bin/rollcall-scanner /usr/local/bin/rollcall-scanner
USER scanner
WORKDIR /data
VOLUME ["/data"]
ENV ROLLCALL_SCANNER_DATA_DIR=/data \
    ROLLCALL_SCANNER_API_KEY_FILE=/run/secrets/api-key \
    ROLLCALL_SCANNER_SOURCE=ble \
    DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket
# `docker exec scanner rollcall-scanner status` shows the outbox; it is safe while running.
STOPSIGNAL SIGTERM
ENTRYPOINT ["rollcall-scanner"]
CMD ["run"]
