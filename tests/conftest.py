"""Shared fixtures: the reference folder, tiny random models, and deterministic CPU settings."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from tokenattr.models import VisionTransformer, ViTConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "reference"


def reference_dir(name: str) -> Path:
    """A folder of ``../shared/reference``, or skip: a user's clone has no ``../shared``."""
    folder = REFERENCE / name
    if not folder.is_dir():
        pytest.skip(f"reference data {folder} is absent (it lives beside the repository, in ../shared)")
    return folder


def random_vit(
    depth: int = 2,
    num_heads: int = 4,
    embed_dim: int = 32,
    image_size: int = 32,
    patch_size: int = 8,
    num_classes: int = 5,
    pooling: str = "cls",
    seed: int = 0,
) -> VisionTransformer:
    """A tiny ViT with weights drawn so that attention is peaked and logits spread (not the near-uniform init)."""
    config = ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        num_classes=num_classes,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_dim=2 * embed_dim,
        pooling=pooling,
    )
    model = VisionTransformer(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                scale = 1.0 if param.dim() > 1 and ("qkv" in name or "head" in name) else 0.5
                fan_in = param[0].numel() if param.dim() > 1 else param.numel()
                std = scale * (2 / fan_in) ** 0.5 if param.dim() > 1 else 0.05
                param.copy_(std * torch.randn(param.shape, generator=generator))
    return model.eval()


@pytest.fixture
def tiny_vit() -> VisionTransformer:
    return random_vit()


@pytest.fixture
def tiny_images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def spread_hf_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Redraw a transformers model's weights so that attention is peaked and logits differ clearly (its own init,
    std 0.02, makes every token look alike); returns it in eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "LayerNorm.weight" in name:
                param.copy_(1 + 0.1 * torch.randn_like(param))
            else:
                param.normal_(0, 0.3 if param.dim() > 1 else 0.05)
    return model.eval()


def minmax(values: np.ndarray | torch.Tensor) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return (values - values.min()) / (values.max() - values.min())


ROOT = Path(__file__).resolve().parents[1]
# What torchrun prints when its rendezvous port cannot be bound (a sandbox without loopback networking).
PORT_FAILURES = ("Address already in use", "EADDRINUSE", "failed to listen", "errno: 99")


def load_script(name: str, folder: str = "ViT"):
    """Import ``{folder}/{name}.py`` as a module (the experiment folders are scripts, not packages)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_torchrun(script: str, flags: list[str], cwd: Path, processes: int = 2) -> subprocess.CompletedProcess:
    """Run ``ViT/{script}.py`` under torchrun with CPU processes of one thread each, on 127.0.0.1.

    Skips the test when the rendezvous port cannot be bound; fails it, with the output, on any other error.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={processes}"]
    command += ["--master_addr=127.0.0.1", f"--master_port={port}", str(ROOT / "ViT" / f"{script}.py"), *flags]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=90)
    output = result.stdout + result.stderr
    if result.returncode != 0 and any(sign in output for sign in PORT_FAILURES):
        pytest.skip(f"torchrun could not bind 127.0.0.1:{port} in this sandbox:\n{output[-2000:]}")
    assert result.returncode == 0, output[-4000:]
    return result


@contextmanager
def one_torch_thread():
    """Run with one intra-op thread, as torchrun's processes do (OMP_NUM_THREADS=1): CPU float rounding depends
    on the thread count, so a single-process reference must use the same count to compare exactly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
