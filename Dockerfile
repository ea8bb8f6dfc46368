# syntax=docker/dockerfile:1
# Release image for linux/amd64 and linux/arm64. The build stage runs on the builder's own
# platform (--platform=$BUILDPLATFORM) and cross-compiles to TARGETARCH, so an arm64 image
# (Graviton, Ampere) is never built with fat LTO under QEMU emulation. glibc build on Debian
# bookworm, run on distroless cc-debian12 (same glibc, CA certificates for TLS to AWS and
# Google, no shell). The cargo commands of the build stage are exercised without Docker by
# tests/chart/dockerfile-build-check.sh (make docker-check).
#
# Base images: the Rust toolchain by its full version, the runtime by digest (the digest of
# the multi-arch `nonroot` index; update with `crane digest gcr.io/distroless/cc-debian12:nonroot`).
ARG RUST_VERSION=1.95.0
ARG DISTROLESS=gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f

FROM --platform=$BUILDPLATFORM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
# The Rust target of TARGETARCH, kept in .rust-target for the later steps; arm64 from an amd64
# builder links with Debian's cross gcc (ring compiles C for the target with it too).
# hadolint ignore=DL3008
RUN case "${TARGETARCH:-amd64}" in \
      amd64) echo x86_64-unknown-linux-gnu >.rust-target ;; \
      arm64) echo aarch64-unknown-linux-gnu >.rust-target \
        && if [ "$(uname -m)" != aarch64 ]; then \
             apt-get update && apt-get install -y --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
             && rm -rf /var/lib/apt/lists/*; fi ;; \
      *) echo "unsupported TARGETARCH=${TARGETARCH}" >&2; exit 1 ;; \
    esac \
    && rustup target add "$(cat .rust-target)"
ENV CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
# Dependencies in their own layer: build the locked dependency graph against a dummy crate,
# so source edits only rebuild regcred-refresher itself.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && t="$(cat .rust-target)" \
    && cargo build --release --locked --target "$t" \
    && rm -rf src "target/$t/release/regcred-refresher" "target/$t/release/deps/regcred_refresher-"* \
       "target/$t/release/deps/libregcred_refresher-"* "target/$t/release/.fingerprint/regcred-refresher-"*
COPY src ./src
# The binary lands at one path whatever the target, for the runtime stage to copy.
RUN touch src/main.rs src/lib.rs && t="$(cat .rust-target)" \
    && cargo build --release --locked --target "$t" \
    && mkdir -p out && cp "target/$t/release/regcred-refresher" out/regcred-refresher \
    && if [ "$t" = "$(rustc -vV | sed -n 's/^host: //p')" ]; then ./out/regcred-refresher --version; fi

# hadolint ignore=DL3006
FROM ${DISTROLESS}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="regcred-refresher" \
      org.opencontainers.image.description="Keeps Kubernetes image pull secrets for private registries (ECR, ECR Public, Artifact Registry, ACR, static) valid" \
      org.opencontainers.image.source="https://github.com/regcred-refresher/regcred-refresher" \
      org.opencontainers.image.url="https://github.com/regcred-refresher/regcred-refresher" \
      org.opencontainers.image.documentation="https://github.com/regcred-refresher/regcred-refresher/blob/main/docs/install.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="regcred-refresher" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /src/out/regcred-refresher /usr/local/bin/regcred-refresher
# distroless "nonroot"; numeric so runAsNonRoot can be verified by the kubelet
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/regcred-refresher"]
