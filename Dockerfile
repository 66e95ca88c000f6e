# Smart Zone services image: one image, one command per service (smartzone ingest, ...).
# The registry and the data charter are not read from the image: docker-compose mounts them read-only
# under /etc/smartzone (adding a sensor is an edit and a restart, not a rebuild).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY smartzone ./smartzone
COPY cli ./cli
COPY ingest ./ingest
COPY storage ./storage
COPY datacharter ./datacharter
COPY api ./api
COPY gateways ./gateways
COPY dashboards ./dashboards
COPY experiments ./experiments
RUN pip install --no-cache-dir ".[postgres]" && useradd --system --uid 10001 smartzone \
    && mkdir -p /var/lib/smartzone/peppers && chown -R smartzone /var/lib/smartzone \
    && chmod 700 /var/lib/smartzone/peppers
USER smartzone
ENV SMARTZONE_DATA_DIR=/var/lib/smartzone \
    SMARTZONE_REGISTRY=/etc/smartzone/registry/antwerp.yaml \
    SMARTZONE_CHARTER__PATH=/etc/smartzone/charter/charter.yaml
ENTRYPOINT ["smartzone"]
CMD ["ingest"]
