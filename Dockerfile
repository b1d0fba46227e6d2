# The prediction service image: the flex_ml package and one export baked in.
#   dvc repro                      # produces artifacts/model
#   docker build -t flex-ml-serve .
#   docker run -p 8000:8000 -e FLEX_ML_API_KEYS=change-me flex-ml-serve
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=2 FLEX_ML_MAX_BATCH=10000
WORKDIR /app

# Only what serving imports, at the versions the project pins (requirements.txt as constraints).
COPY requirements.txt ./
RUN pip install -c requirements.txt tensorflow-cpu pandas pyyaml typer fastapi fastapi-swagger "uvicorn[standard]" \
        prometheus_client orjson pydantic "psycopg[binary]"

COPY settings.ini setup.py pyproject.toml README.md ./
COPY flex_ml ./flex_ml
RUN pip install --no-deps .

COPY artifacts/model ./model

RUN useradd --create-home --uid 10001 flexml
USER 10001
EXPOSE 8000
# SIGTERM: stop accepting, finish in-flight requests, flush the prediction log, exit.
STOPSIGNAL SIGTERM
CMD ["flex-ml", "serve", "--model", "/app/model", "--host", "0.0.0.0", "--port", "8000"]
