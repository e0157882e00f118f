"""Writes reference fixtures as safetensors files (F32 and I32 only: what our reader takes).

Every fixture file carries metadata naming the generator, the torch version, the seed and
the case, so a test failure can be traced back to the exact reference that produced it.
The file is written to a temporary name and renamed, so a fixture is never half-written.
"""
import json
import os
import struct

import torch

FORMAT = "microbatch-fixture-1"


def _as_storable(name, tensor):
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype in (torch.float64, torch.float32):
        return "F32", tensor.to(torch.float32)
    if tensor.dtype in (torch.int64, torch.int32, torch.bool, torch.uint8):
        return "I32", tensor.to(torch.int32)
    raise ValueError(f"{name}: dtype {tensor.dtype} is not storable (F32 or I32 only)")


def write_fixture(path, tensors, case, seed, extra_metadata=None):
    """tensors: dict name -> torch.Tensor (float64 references are rounded to float32)."""
    metadata = {
        "format": FORMAT,
        "generator": "tools/reference/make_fixtures.py",
        "torch_version": torch.__version__,
        "seed": str(seed),
        "case": case,
    }
    for key, value in (extra_metadata or {}).items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value)
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        dtype, tensor = _as_storable(name, tensors[name])
        data = tensor.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return os.path.getsize(path)


def fp32_values(tensor):
    """The exact float32 values as float64, so a float64 reference sees our inputs."""
    return tensor.to(torch.float32).to(torch.float64)
