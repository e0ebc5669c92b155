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
PYTHONPATH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)${PYTHONPATH:+:$PYTHONPATH}
export PYTHONPATH
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PY=${PY:-$REPO_DIR/.venv/bin/python}
export NNUNET_BIN=${NNUNET_BIN:-$REPO_DIR/.venv/bin}
