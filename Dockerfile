# registry-local as a container image. Build: docker build -t registry-local .
# Run on a host, for its engines (host networking, the cache on the host):
#   docker run -d --network host -v /var/lib/registry-local:/var/lib/registry-local \
#     -e REGISTRY_LOCAL_S3_BUCKET=... -e AWS_REGION=... registry-local
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY registry_local ./registry_local
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 registry-local \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/registry-local \
      --shell /usr/sbin/nologin registry-local \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/registry-local
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# Every option is an environment variable REGISTRY_LOCAL_<OPTION>.
ENV REGISTRY_LOCAL_LISTEN=127.0.0.1:5000 \
    REGISTRY_LOCAL_CACHE_DIR=/var/lib/registry-local/cache \
    REGISTRY_LOCAL_FS_ROOT=/var/lib/registry-local/store \
    REGISTRY_LOCAL_LOG_FORMAT=json \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/registry-local"]
USER 10001:10001
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["registry-local", "check"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["registry-local"]
CMD ["serve"]
