#!/usr/bin/env python3
"""Cross-check by hand: a microbatch checkpoint loads into the torchvision model of the same
name with load_state_dict(strict=True) and has the same parameter count.

Usage: python3 tools/check_torchvision_load.py CHECKPOINT MODEL NUM_CLASSES
Needs torch and torchvision (Debian: apt-get install python3-torch python3-torchvision); the
safetensors package is not needed: the format (8-byte little-endian header length, JSON
header, raw little-endian data) is read here directly. Not part of CI.
"""
import json
import struct
import sys

import torch
import torchvision

DTYPES = {"F32": torch.float32, "I32": torch.int32, "F16": torch.float16, "BF16": torch.bfloat16}


def load_safetensors(path):
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data = f.read()
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        buf = bytearray(data[begin:end])
        t = torch.frombuffer(buf, dtype=DTYPES[info["dtype"]]) if buf else torch.empty(0)
        tensors[name] = t.reshape(info["shape"]).clone()
    return tensors, metadata


def main():
    path, model_name, classes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    state, metadata = load_safetensors(path)
    model = getattr(torchvision.models, model_name)(num_classes=classes)
    # torchvision keeps num_batches_tracked as int64; ours is int32: convert, nothing else.
    state = {k: (v.long() if k.endswith("num_batches_tracked") else v) for k, v in state.items()}
    result = model.load_state_dict(state, strict=True)
    print(f"{path}: {len(state)} tensors loaded into torchvision.models.{model_name} "
          f"(strict): {result}; metadata {metadata}")
    n_ours = sum(v.numel() for k, v in state.items()
                 if "running_" not in k and "num_batches" not in k)
    n_tv = sum(p.numel() for p in model.parameters())
    print(f"parameters: ours {n_ours}, torchvision {n_tv}")
    return 0 if n_ours == n_tv else 1


if __name__ == "__main__":
    sys.exit(main())
