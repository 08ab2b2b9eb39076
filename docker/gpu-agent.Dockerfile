# GPU agent, one per GPU node (DaemonSet): NVML inventory (libnvidia-ml.so.1 is injected by the NVIDIA container runtime), job runner, signed receipts. bookworm-slim keeps chown, which the chart's state-dir-owner init container uses.
# Built by `make images` from the repository root:
#   docker build -f docker/gpu-agent.Dockerfile -t ghcr.io/aitbc/aitbc-gpu-agent:<workspace version> .
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
    cargo build --release --locked --bin aitbc-gpu-agent \
 && install -D -m 0755 target/release/aitbc-gpu-agent /out/aitbc-gpu-agent \
 && mkdir -p /out/home/nonroot

FROM ${RUNTIME_IMAGE}
ARG VERSION=dev
LABEL org.opencontainers.image.title="aitbc-gpu-agent" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/aitbc/aitbc" \
      org.opencontainers.image.licenses="Apache-2.0"
# Only the binary (and an empty home owned by the non-root user).
COPY --from=builder /out/aitbc-gpu-agent /usr/local/bin/aitbc-gpu-agent
COPY --from=builder --chown=65532:65532 /out/home/nonroot /home/nonroot
ENV HOME=/home/nonroot
USER 65532:65532
EXPOSE 7070 9102
ENTRYPOINT ["/usr/local/bin/aitbc-gpu-agent"]
