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

COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Static files are collected at build time (whitenoise serves them); a throwaway key is
# enough for collectstatic, the real one comes from the environment at run time.
RUN DEBUG=false SECRET_KEY=collectstatic-only ALLOWED_HOSTS=localhost REDIS_URL=redis://localhost:6379/0 \
        python manage.py collectstatic --noinput -v0 \
    && useradd --system --uid 1000 --home-dir /app snapasset \
    && mkdir -p /app/var/media /app/var/metrics /app/var/beat /app/logs \
    && chown -R snapasset:snapasset /app/var /app/logs

USER snapasset

EXPOSE 8000
CMD ["sh", "-c", "python manage.py migrate --noinput && exec uvicorn snapasset.asgi:application --host 0.0.0.0 --port ${PORT} --no-access-log"]
