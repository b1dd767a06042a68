# Production image: one image for web, worker and beat (see docker-compose.yml).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# glibc gives each thread that allocates its own malloc arena, and each keeps memory once
# freed; the web server runs turns in a thread pool, so two arenas keep it smaller (the soak
# bench, bench/soak.py, runs its server this way).
ENV MALLOC_ARENA_MAX=2
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends gcc \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY agentplatform agentplatform
COPY agents agents
COPY memory memory
RUN pip install --no-cache-dir .
COPY . .
RUN DATABASE_URL=postgresql://build@localhost/build REDIS_URL=redis://localhost:6379/0 \
    python manage.py collectstatic --noinput
RUN useradd --system --uid 1000 app && chown -R app /app
USER app
EXPOSE 8000
# Websocket frames uncompressed (small JSON frames: deflating each costs more CPU than it
# saves); a deployment may set this to true.
ENV UVICORN_WS_PER_MESSAGE_DEFLATE=false
CMD ["uvicorn", "agentplatform.project.asgi:application", "--host", "0.0.0.0", "--port", "8000"]
