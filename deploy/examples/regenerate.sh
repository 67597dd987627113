#!/usr/bin/env bash
# The examples of deploy/examples/, as `advisor plan` writes them; tests/test_manifests.py
# runs these same lines and fails when a folder here differs. Run from the repository root:
#   PYTHONPATH=$PWD .venv/bin/python -m advisor ... (or `advisor` where it is installed)
set -euo pipefail
advisor="${ADVISOR:-advisor}"
# 2 x 24 GB, PCIe (RTX 4090s have no NVLink): Phi-4's 27 GiB of bf16 weights need both GPUs
$advisor plan phi-4 --gpus-per-node 2 --gpu "RTX 4090 24GB" --interconnect pcie --out deploy/examples/2x24gb-phi-4
# 8 x 80 GB (H100 SXM: NVLink): Llama 3.1 70B, 8 sequences of its full 131,072-token context at once
$advisor plan llama-3.1-70b --gpus-per-node 8 --gpu "H100 80GB" --interconnect nvlink --concurrency 8 --out deploy/examples/8x80gb-llama-3.1-70b
# 8 x 80 GB for throughput: Llama 3.1 8B replicas for 250 requests/s of 256 output tokens
$advisor plan llama-3.1-8b --gpus-per-node 8 --gpu "H100 80GB" --interconnect nvlink --max-model-len 8192 --requests-per-s 250 --out deploy/examples/8x80gb-llama-3.1-8b-250rps
# 2 nodes x 8 x 80 GB: Llama 3.1 405B in bf16 (756 GiB of weights) over both nodes
$advisor plan llama-3.1-405b --nodes 2 --gpus-per-node 8 --gpu "H100 80GB" --interconnect nvlink --network infiniband --max-model-len 65536 --out deploy/examples/2x8x80gb-llama-3.1-405b
