# syntax=docker/dockerfile:1
# Release image: a glibc build on Debian bookworm, run on distroless cc-debian12 (same glibc,
# ships CA certificates for TLS to AWS and Google, no shell). The cargo commands of the build
# stage are exercised without Docker by tests/chart/dockerfile-build-check.sh (make docker-check).
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Dependencies in their own layer: build the locked dependency graph against a dummy crate,
# so source edits only rebuild regcred-refresher itself.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/regcred-refresher target/release/deps/regcred_refresher-* \
       target/release/deps/libregcred_refresher-* target/release/.fingerprint/regcred-refresher-*
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && ./target/release/regcred-refresher --version

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/regcred-refresher /usr/local/bin/regcred-refresher
# distroless "nonroot"; numeric so runAsNonRoot can be verified by the kubelet
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/regcred-refresher"]
