#!/usr/bin/env python3
"""Writes a safetensors file's tensors as a PyTorch checkpoint, without torch.

Test-only: Osprey's checkpoint loader must read the files the seed's authors
publish, e.g. AdaFace's PyTorch Lightning `.ckpt` (a `torch.save` zip archive
whose `state_dict` keys carry `model.`, beside `epoch`, `hyper_parameters`,
optimizer state and a `head.kernel` classifier) or OpenGait's checkpoints (the
state dict under `model`, beside `optimizer`, `scheduler` and `iteration`).
This script produces those
layouts from the standard library alone, the way `torch.save` lays it out
(pickle protocol 2, tensors as `torch._utils._rebuild_tensor_v2` over
persistent storages, one zip member per storage under `archive/data/`), so the
Rust tests can run where torch is not installed. `torch.load` reads the result.

Usage:
  write_torch_checkpoint.py IN.safetensors OUT.ckpt [--layout lightning|opengait|plain]
      [--prefix model.] [--head N]
"""

import argparse
import collections
import io
import json
import pickle
import struct
import sys
import types
import zipfile

# Stand-ins for the torch globals the pickle names: the pickler stores them by
# module and name, exactly as torch's own classes and function are stored.
torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")


def _rebuild_tensor_v2(*args):  # never called here: only its name is pickled
    raise NotImplementedError


_rebuild_tensor_v2.__module__ = "torch._utils"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
STORAGE_CLASSES = {}
for dtype, name in [("F32", "FloatStorage"), ("F16", "HalfStorage"), ("BF16", "BFloat16Storage"),
                    ("I64", "LongStorage"), ("F64", "DoubleStorage")]:
    cls = type(name, (), {"__module__": "torch"})
    setattr(torch, name, cls)
    STORAGE_CLASSES[dtype] = cls
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils
ITEM_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "F64": 8}


class Storage:
    def __init__(self, key, dtype, data):
        self.key, self.dtype, self.data = key, dtype, data


class Tensor:
    """A contiguous tensor over its own storage."""

    def __init__(self, storage, shape):
        self.storage, self.shape = storage, tuple(shape)

    def __reduce__(self):
        stride, acc = [], 1
        for d in reversed(self.shape):
            stride.insert(0, acc)
            acc *= d
        hooks = collections.OrderedDict()
        return (_rebuild_tensor_v2, (self.storage, 0, self.shape, tuple(stride), False, hooks))


class CheckpointPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            numel = len(obj.data) // ITEM_SIZE[obj.dtype]
            return ("storage", STORAGE_CLASSES[obj.dtype], obj.key, "cpu", numel)
        return None


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    out = collections.OrderedDict()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = (info["dtype"], info["shape"], body[a:b])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--layout", choices=["lightning", "opengait", "plain"], default="lightning")
    ap.add_argument("--prefix", default="model.")
    ap.add_argument("--head", type=int, default=10, help="classes of the head.kernel classifier to add (0: none)")
    args = ap.parse_args()

    storages = []

    def tensor(dtype, shape, data):
        s = Storage(str(len(storages)), dtype, data)
        storages.append(s)
        return Tensor(s, shape)

    state = collections.OrderedDict()
    for name, (dtype, shape, data) in read_safetensors(args.src).items():
        state[args.prefix + name] = tensor(dtype, shape, data)
    if args.head:
        state["head.kernel"] = tensor("F32", [512, args.head], bytes(4 * 512 * args.head))
    if args.layout == "lightning":
        momentum = tensor("F32", [4], struct.pack("<4f", 0.1, 0.2, 0.3, 0.4))
        obj = {
            "epoch": 24,
            "global_step": 123456,
            "pytorch-lightning_version": "1.8.6",
            "state_dict": state,
            "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 24}}}},
            "callbacks": {"ModelCheckpoint": {"best_model_score": None, "monitor": "val_acc"}},
            "optimizer_states": [{"state": {0: {"momentum_buffer": momentum}},
                                  "param_groups": [{"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                                                    "nesterov": False, "params": [0, 1, 2]}]}],
            "lr_schedulers": [{"milestones": {12: 1, 20: 1, 24: 1}, "gamma": 0.1, "last_epoch": 24}],
            "hyper_parameters": {"arch": "ir_18", "head": "adaface", "m": 0.4, "h": 0.333, "s": 64.0,
                                 "t_alpha": 0.01, "lr_milestones": [12, 20, 24], "use_mxrecord": True},
        }
    elif args.layout == "opengait":
        momentum = tensor("F32", [4], struct.pack("<4f", 0.1, 0.2, 0.3, 0.4))
        obj = {
            "model": state,
            "optimizer": {"state": {0: {"momentum_buffer": momentum}},
                          "param_groups": [{"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                                            "nesterov": False, "params": [0, 1, 2]}]},
            "scheduler": {"milestones": {20000: 1, 40000: 1, 50000: 1}, "gamma": 0.1, "last_epoch": 60000},
            "iteration": 60000,
        }
    else:
        obj = state

    buf = io.BytesIO()
    CheckpointPickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(args.dst, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        for s in storages:
            z.writestr(f"archive/data/{s.key}", s.data)
        z.writestr("archive/version", "3\n")


if __name__ == "__main__":
    main()
