# shellcheck shell=bash
# Environment for training the phantom specialists on a small CPU machine (source it).
export PANTHER_DATA=${PANTHER_DATA:-/work/data}
export nnUNet_raw=$PANTHER_DATA/nnUNet_raw
export nnUNet_preprocessed=$PANTHER_DATA/nnUNet_preprocessed
export nnUNet_results=$PANTHER_DATA/nnUNet_results
export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-2}
export nnUNet_def_n_proc=${nnUNet_def_n_proc:-2}
export nnUNet_compile=f
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# glibc's malloc keeps the memory a step frees for the next step instead of giving it back to the kernel and faulting
# it in (and zeroing it) again: a training process took about 26,000 minor page faults per CPU-second, 15x fewer with
# these; 1.065x faster specialist epochs, 6 % less CPU time (bench/results/training-allocator.json; jemalloc was
# 0.87x). No result changes: only where freed memory goes. A caller's own values are kept.
export MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-1099511627776}  # never trim the heap's top
export MALLOC_TOP_PAD_=${MALLOC_TOP_PAD_:-1073741824}                   # grow the heap 1 GiB at a time (address space only)
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-33554432}       # blocks below 32 MiB from the heap, not mmap
PYTHONPATH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)${PYTHONPATH:+:$PYTHONPATH}
export PYTHONPATH
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PY=${PY:-$REPO_DIR/.venv/bin/python}
export NNUNET_BIN=${NNUNET_BIN:-$REPO_DIR/.venv/bin}
