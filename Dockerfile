# One image for every SnapAsset process (web, workers, beat, flower): docker-compose.yml
# picks the command. Build: docker build -t snapasset .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SNAPASSET_VAR_DIR=/app/var \
    LOG_DIR=/app/logs \
    PORT=8000

WORKDIR /app

# The runtime lock only (every hash checked): no process runner, no embedded Redis, no
# test or lint tools; those are in requirements-run.txt / requirements-dev.txt.
COPY requirements.txt .
RUN pip install --require-hashes -r requirements.txt

COPY . .

# Static files are collected at build time (whitenoise serves them); a throwaway key is
# enough for collectstatic, the real one comes from the environment at run time. Containers
# run in production mode (DEBUG unset): example secrets refuse to start.
RUN DEBUG=false SECRET_KEY=collectstatic-only ALLOWED_HOSTS=localhost REDIS_URL=redis://localhost:6379/0 \
        python manage.py collectstatic --noinput -v0 \
    && useradd --system --uid 1000 --home-dir /app snapasset \
    && mkdir -p /app/var/media /app/var/metrics /app/var/beat /app/logs \
    && chown -R snapasset:snapasset /app/var /app/logs

USER snapasset

EXPOSE 8000
CMD ["sh", "-c", "python manage.py migrate --noinput && exec gunicorn snapasset.asgi:application --worker-class uvicorn_worker.UvicornWorker --bind 0.0.0.0:${PORT} --workers ${WEB_CONCURRENCY:-2} --graceful-timeout 20"]
