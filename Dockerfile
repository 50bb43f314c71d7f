# The modelog image: one CLI, one image for the worker, projector and dashboard.
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY . /app
# A C compiler: the install compiles the monitoring hot path with mypyc (setup.py);
# without one it would install plain Python (same behaviour, slower worker).
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
# CPU build of PyTorch first, so the dependency does not pull CUDA wheels; then
# the exact versions of constraints.txt (the torch line is already satisfied).
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0+cpu" \
 && pip install -c constraints.txt /app
ENV MODELOG_DATA_DIR=/data
VOLUME ["/data"]
ENTRYPOINT ["modelog"]
CMD ["--help"]
