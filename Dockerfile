# syntax=docker/dockerfile:1
# The serving image: FastAPI + ONNX Runtime on python:3.11-slim, no torch, non-root, the shipped models inside.
#   docker build -t openset .
#   docker run -p 8000:8000 openset
# (Where Docker has no bridge network, add --network host to both and drop -p.) The training image, with
# torch, is another file: docker build -f Dockerfile.train -t openset-train .  (see the README, "Deploy")

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends binutils >/dev/null \
 && python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY openset ./openset
COPY service ./service
COPY training ./training
# Then drop what serving never loads: build tools, tests, ONNX Runtime's offline tooling.
RUN pip install -c constraints.txt ".[serve]" \
 && pip uninstall -y setuptools \
 && cd /opt/venv/lib/python3*/site-packages \
 && rm -rf pip pip-* _distutils_hack distutils-precedence.pth numpy/f2py numpy/distutils numpy/_pyinstaller \
      onnxruntime/transformers onnxruntime/quantization onnxruntime/tools onnxruntime/datasets \
 && find . -type d \( -name tests -o -name __pycache__ \) -prune -exec rm -rf {} + \
 && find . -name "*.so" -type f -not -path "*.libs/*" -exec strip --strip-unneeded {} + \
 && rm -f /opt/venv/bin/pip*

FROM python:3.11-slim AS serve
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin openset
COPY --from=build /opt/venv /opt/venv
COPY models/mnist-0to4/model.onnx models/mnist-0to4/model.json /app/models/mnist-0to4/
COPY models/mnist-0to4-cnn/model.onnx models/mnist-0to4-cnn/model.json /app/models/mnist-0to4-cnn/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OPENSET_MODEL_REPOSITORY=/app/models \
    OPENSET_HOST=0.0.0.0 \
    OPENSET_PORT=8000 \
    OPENSET_WORKERS=1
USER 10001
WORKDIR /app
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('OPENSET_PORT', '8000'), timeout=2)"]
CMD ["openset-serve"]
