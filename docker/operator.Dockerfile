# Operator: reconcilers for the aitbc.io CRDs and the embedded scheduler (aitbc-operator run).
# Built by `make images` from the repository root:
#   docker build -f docker/operator.Dockerfile -t ghcr.io/aitbc/aitbc-operator:<workspace version> .
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libclang-dev protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep crates and the target directory between image builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=aitbc-target \
    cargo build --release --locked --bin aitbc-operator \
 && install -D -m 0755 target/release/aitbc-operator /out/aitbc-operator \
 && mkdir -p /out/home/nonroot

FROM ${RUNTIME_IMAGE}
ARG VERSION=dev
LABEL org.opencontainers.image.title="aitbc-operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/aitbc/aitbc" \
      org.opencontainers.image.licenses="Apache-2.0"
# Only the binary (and an empty home owned by the non-root user).
COPY --from=builder /out/aitbc-operator /usr/local/bin/aitbc-operator
COPY --from=builder --chown=65532:65532 /out/home/nonroot /home/nonroot
ENV HOME=/home/nonroot
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/aitbc-operator"]
