# arrpc-host with the shipped handlers and a warm compile cache.
#   docker build -t arrpc-host:0.1.0 .
# The build stage runs deploy/image/build.sh, which tests/deploy.rs also
# runs (no container engine there), so the files checked are these.
# deploy/image/check.sh builds it where no registry is reachable, on
# stand-ins for the two base images, and runs it.

# rustup's Rust (handlers/build.sh adds wasm32-wasip2) and a C compiler, on
# the same Debian as the runtime stage, so the binary finds its glibc.
ARG BUILD_IMAGE=rust:1.95-bookworm
# glibc and libgcc as the binary needs, no shell, user 65532 (nonroot).
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY . .
RUN sh deploy/image/build.sh /rootfs

FROM ${RUNTIME_IMAGE}
COPY --from=build /rootfs/ /
USER 65532:65532
EXPOSE 8080 9100
ENTRYPOINT ["/opt/arrpc/bin/arrpc-host"]
CMD ["--config", "/opt/arrpc/arrpc.toml"]
