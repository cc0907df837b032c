# One image for every Tessera process: the five services, the worker, beat and the migrate job.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    TESSERA_DATA_DIR=/var/lib/tessera
WORKDIR /app

COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY tessera ./tessera
COPY migrations ./migrations
RUN pip install . && useradd --system --home /var/lib/tessera tessera \
    && mkdir -p /var/lib/tessera && chown tessera /var/lib/tessera

USER tessera
EXPOSE 8000
CMD ["tessera", "serve", "all", "--host", "0.0.0.0", "--port", "8000"]
