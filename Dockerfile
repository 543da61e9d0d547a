FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY exchange ./exchange
COPY orders ./orders
COPY matching ./matching
COPY settlement ./settlement
COPY marketdata ./marketdata
COPY wallet ./wallet
COPY templates ./templates
COPY manage.py ./
RUN pip install --no-cache-dir .
RUN useradd --create-home app
USER app
EXPOSE 8000
CMD ["gunicorn", "exchange.wsgi", "--config", "exchange/gunicorn.conf.py", "--bind", "0.0.0.0:8000"]
