# PANTHER pancreatic tumour segmentation: grand-challenge algorithm image.
#
# The default base is the CUDA runtime image the platform's T4 machines run (torch 2.8.0 satisfies
# nnunetv2 2.8.1, which excludes 2.9.x, and its CUDA 12.8 build includes the T4's sm_75 kernels).
# Tests build this same file on a CPU base image: --build-arg BASE_IMAGE=localhost/panther-cpu-base:...
ARG BASE_IMAGE=pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime
# The platform runs linux/amd64 only: built anywhere (an arm64 laptop too), the image must be amd64.
# hadolint ignore=DL3029  # --platform is on purpose (see the line above); export.sh checks the result
FROM --platform=linux/amd64 ${BASE_IMAGE}

# Only for package installs at build time, where a proxy or a local wheel folder needs them; never baked in.
ARG PIP_CERT
ARG PIP_FIND_LINKS

# At run time the root filesystem may be read-only: every cache and config goes to /tmp.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp/home \
    XDG_CACHE_HOME=/tmp/cache \
    TORCH_HOME=/tmp/torch \
    MPLCONFIGDIR=/tmp/matplotlib \
    nnUNet_raw=/tmp/nnUNet_raw \
    nnUNet_preprocessed=/tmp/nnUNet_preprocessed \
    nnUNet_results=/tmp/nnUNet_results \
    PANTHER_APP_ROOT=/opt/app

# A fixed numeric id, used by USER below: a runtime can then verify "non-root" without reading /etc/passwd.
RUN groupadd --system --gid 1001 user \
    && useradd --system --no-log-init --uid 1001 --gid user --create-home --home-dir /home/user user

WORKDIR /opt/app

# Dependencies first, in their own layer: rebuilt only when the pins change.
# The base image's torch and torchvision are kept as they are (a constraint, so pip fails rather than
# silently replacing them with another multi-GB build).
COPY requirements-container.txt /opt/app/
RUN python -c "import importlib.metadata as m; print(*[f'{p}=={m.version(p)}' for p in ('torch', 'torchvision')], sep='\n')" \
        > /tmp/base-constraints.txt \
    && python -m pip install --no-cache-dir -r requirements-container.txt -c /tmp/base-constraints.txt \
    && rm /tmp/base-constraints.txt \
    && python -c "import torch, nnunetv2, SimpleITK; print('torch', torch.__version__)"

COPY pyproject.toml README.md /opt/app/
COPY src /opt/app/src
RUN python -m pip install --no-cache-dir --no-deps /opt/app && rm -rf /opt/app/src /opt/app/build

COPY inference.py /opt/app/
COPY resources /opt/app/resources
COPY model_weights /opt/app/model_weights

# glibc's malloc keeps freed memory for the next allocation instead of giving it back to the kernel and faulting it
# in again: on the CPU path the job ran 1.03-1.07x faster (median per round) with the same masks and the same peak
# memory within -9..+7 % (bench/inference_allocator.py, bench/README.md; the GPU path not measured). The values of
# training/env.sh (tests/test_split_benches.py).
ENV MALLOC_TRIM_THRESHOLD_=1099511627776 \
    MALLOC_TOP_PAD_=1073741824 \
    MALLOC_MMAP_THRESHOLD_=33554432

USER 1001:1001

ENTRYPOINT ["python", "inference.py"]
