# bigmodel-nb model server: `bigmodel-nb serve` on a finished run folder mounted at /models/run.
#
#   docker build -t bigmodel-nb-serve .
#   docker run --rm -p 8000:8000 -v "$PWD/runs/RUN:/models/run" -e BIGMODEL_API_KEY=... bigmodel-nb-serve
#
# Not built on the project's machines (no Docker there); see deploy/README.md. The server appends its request log to
# RUN/logs/serve.jsonl, so the mounted folder must be writable by uid 10001 (deploy/kubernetes.yaml copies a read-only
# run into a writable emptyDir instead).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# The CPU build of torch first, from PyTorch's CPU index: the package's plain `torch>=2.4` would otherwise pull the
# multi-GB CUDA build from PyPI. The same pin as the Makefile.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# Then the package: serving needs only its base dependencies (FastAPI, uvicorn, transformers, onnxruntime, ...).
# EXTRAS adds optional ones, e.g. --build-arg EXTRAS=demo.
ARG EXTRAS=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bigmodel_nb ./bigmodel_nb
RUN pip install "/src${EXTRAS:+[$EXTRAS]}" && python -c "import torch, bigmodel_nb.serve; assert not torch.version.cuda"

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin bigmodel
USER 10001
WORKDIR /home/bigmodel

VOLUME ["/models/run"]
EXPOSE 8000
# Liveness: the process answers. Probes are open even when BIGMODEL_API_KEY is set.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)" || exit 1

# Listening on 0.0.0.0 without an API key prints a warning: set BIGMODEL_API_KEY (clients send it as X-API-Key).
ENTRYPOINT ["bigmodel-nb", "serve"]
CMD ["/models/run", "--host", "0.0.0.0", "--port", "8000"]
