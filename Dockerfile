# The image of the edge, the consumers and the migrate job; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY conformity_pipeline ./conformity_pipeline
COPY ingest ./ingest
COPY consumers ./consumers
COPY migrations ./migrations
RUN pip install . && useradd --system --uid 10001 --home-dir /app pipeline

USER pipeline
EXPOSE 8080 9100
ENTRYPOINT ["conformity-pipeline"]
CMD ["--help"]
