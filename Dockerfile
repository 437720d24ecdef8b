# signalgate: slim image, non-root, config mounted at /etc/signalgate.toml, data in /var/lib/signalgate.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY gateway ./gateway
COPY static_js ./static_js
RUN pip install --no-cache-dir . \
 && useradd --system --home /var/lib/signalgate --create-home signalgate
USER signalgate
VOLUME ["/var/lib/signalgate"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz').status == 200 else 1)"
CMD ["signalgate", "run", "--config", "/etc/signalgate.toml"]
