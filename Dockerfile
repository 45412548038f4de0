# arrpc-host with the shipped handlers and a warm compile cache.
#   docker build -t arrpc-host:0.1.0 .
# The build stage runs deploy/image/build.sh, which tests/deploy.rs also
# runs (no container engine there), so the files checked are these.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN sh deploy/image/build.sh /rootfs

# glibc and libgcc as the binary needs, no shell, user 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /rootfs/ /
USER 65532:65532
EXPOSE 8080 9100
ENTRYPOINT ["/opt/arrpc/bin/arrpc-host"]
CMD ["--config", "/opt/arrpc/arrpc.toml"]
