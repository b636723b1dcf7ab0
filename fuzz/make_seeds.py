#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into OUT/<target>/ (standard library only).

Small valid inputs are built from scratch (a tiny CLIP state dict as safetensors, torch.save and
TorchScript-style archives; tokenizer files; dataset lists), and the repository's fixtures
contribute what is small in them: the data.pkl pickles, the safetensors headers, config.json.
Usage: make_seeds.py REPO_ROOT OUT
"""
import collections
import io
import json
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

repo, out = Path(sys.argv[1]), Path(sys.argv[2])
fixtures = repo / "tests" / "fixtures"


def seed(target, name, data):
    path = out / target
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_bytes(data if isinstance(data, bytes) else data.encode())


# --- a tiny CLIP (OpenAI layout): enough for the loader to infer a configuration --------------
SHAPES = {
    "visual.conv1.weight": [8, 3, 4, 4],
    "visual.class_embedding": [8],
    "visual.positional_embedding": [5, 8],
    "visual.transformer.resblocks.0.attn.in_proj_weight": [24, 8],
    "visual.proj": [8, 4],
    "transformer.resblocks.0.attn.in_proj_weight": [24, 8],
    "ln_final.weight": [8],
    "text_projection": [8, 4],
    "positional_embedding": [4, 8],
    "token_embedding.weight": [16, 8],
    "logit_scale": [],
}
HF_SHAPES = {
    "vision_model.embeddings.patch_embedding.weight": [8, 3, 4, 4],
    "vision_model.embeddings.class_embedding": [8],
    "vision_model.embeddings.position_embedding.weight": [5, 8],
    "vision_model.encoder.layers.0.self_attn.q_proj.weight": [8, 8],
    "vision_model.encoder.layers.0.self_attn.k_proj.weight": [8, 8],
    "vision_model.encoder.layers.0.self_attn.v_proj.weight": [8, 8],
    "vision_model.encoder.layers.0.self_attn.q_proj.bias": [8],
    "vision_model.encoder.layers.0.self_attn.k_proj.bias": [8],
    "vision_model.encoder.layers.0.self_attn.v_proj.bias": [8],
    "vision_model.encoder.layers.0.layer_norm1.weight": [8],
    "visual_projection.weight": [4, 8],
    "text_projection.weight": [4, 8],
}


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def safetensors(shapes, metadata=None, dtype="F32", size=4):
    header, offset = {}, 0
    for name, shape in shapes.items():
        length = numel(shape) * size
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + length]}
        offset += length
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + bytes(offset)


native_config = {
    "embed_dim": 4,
    "vision": {"width": 8, "layers": 1, "heads": 1, "patch_size": 4, "image_size": 8},
    "text": {"width": 8, "layers": 1, "heads": 1, "context_length": 4, "vocab_size": 16},
    "activation": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
seed("safetensors", "openai", b"\x00" + safetensors(SHAPES))
seed("safetensors", "openai_f16", b"\x00" + safetensors(SHAPES, dtype="F16", size=2))
seed("safetensors", "hf", b"\x00" + safetensors(HF_SHAPES))
seed("safetensors", "native",
     b"\x00" + safetensors(SHAPES, {"mocoop_config": json.dumps(native_config)}))
for fixture in ["openclip_quickgelu.safetensors", "hf_clip/model.safetensors"]:
    data = (fixtures / fixture).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    seed("safetensors", "header_" + fixture.replace("/", "_"), b"\x00" + data[: 8 + n])
seed("safetensors", "config", b"\x01" + (fixtures / "hf_clip/config.json").read_bytes())
seed("safetensors", "native_config", b"\x01" + json.dumps(native_config).encode())

# --- PyTorch pickles, written with stand-ins for the torch globals ----------------------------
torch_mod = types.ModuleType("torch")
utils_mod = types.ModuleType("torch._utils")
script_mod = types.ModuleType("__torch__")
sys.modules.update({"torch": torch_mod, "torch._utils": utils_mod, "__torch__": script_mod})


class FloatStorage:
    pass


FloatStorage.__module__ = "torch"
torch_mod.FloatStorage = FloatStorage


def _rebuild_tensor_v2(*args):
    raise NotImplementedError


_rebuild_tensor_v2.__module__ = "torch._utils"
utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2


class StorageRef:
    def __init__(self, key, count):
        self.key, self.count = key, count


class Tensor:
    def __init__(self, key, shape):
        self.storage, self.shape = StorageRef(key, numel(shape)), tuple(shape)

    def __reduce__(self):
        stride, step = [], 1
        for d in reversed(self.shape):
            stride.insert(0, step)
            step *= d
        args = (self.storage, 0, self.shape, tuple(stride), False, collections.OrderedDict())
        return (_rebuild_tensor_v2, args)


class Module:
    pass


Module.__module__ = "__torch__"
Module.__qualname__ = "Module"
script_mod.Module = Module


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, StorageRef):
            return ("storage", FloatStorage, obj.key, "cpu", obj.count)
        return None


def dumps(root):
    buffer = io.BytesIO()
    TorchPickler(buffer, protocol=2).dump(root)
    return buffer.getvalue()


def archive(folder, pickled, storages, extra=()):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{folder}/data.pkl", pickled)
        z.writestr(f"{folder}/byteorder", "little")
        for key, size in storages:
            z.writestr(f"{folder}/data/{key}", bytes(size))
        for name, data in extra:
            z.writestr(f"{folder}/{name}", data)
        z.writestr(f"{folder}/version", "3\n")
    return buffer.getvalue()


state = collections.OrderedDict(
    (name, Tensor(str(i), shape)) for i, (name, shape) in enumerate(SHAPES.items())
)
storages = [(str(i), numel(s) * 4) for i, s in enumerate(SHAPES.values())]
state_pickle = dumps(state)
wrapped_pickle = dumps({"epoch": 1, "state_dict": state})


def module(attributes):
    m = Module()
    m.__dict__.update(attributes)
    return m


visual = module({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("visual.")})
script_pickle = dumps(module(
    {"visual": visual, **{k: v for k, v in state.items() if not k.startswith("visual.")}}
))
seed("torch_archive", "state_dict", archive("archive", state_pickle, storages))
seed("torch_archive", "wrapped", archive("archive", wrapped_pickle, storages))
seed("torch_archive", "torchscript",
     archive("m", script_pickle, storages, [("constants.pkl", b"\x80\x02).")]))
seed("pickle", "torchscript", b"\x00" + script_pickle)
seed("pickle", "state_dict", b"\x01" + state_pickle)
seed("pickle", "one_tensor", b"\x01" + dumps({"w": Tensor("0", [4, 4])}))
for mode, fixture in [(0, "openclip_quickgelu.torchscript.pt"), (1, "openclip_quickgelu_fp16.pt")]:
    with zipfile.ZipFile(fixtures / fixture) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        seed("pickle", "fixture_" + fixture, bytes([mode]) + z.read(name))

# --- tokenizer --------------------------------------------------------------------------------
for i, text in enumerate(["a photo of a cat.", "Hello, WORLD!! 123 it's <|endoftext|>",
                          "naïve café — 東京 🙂 &amp; <b>x</b>", "  \t\n"]):
    seed("tokenize", f"text{i}", text)


def byte_symbols():
    """GPT-2's printable stand-ins for the 256 byte values, in vocabulary order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


symbols = byte_symbols()
merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("o", "</w>"), ("hell", "o</w>")]
tokens = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in merges]
tokens += ["<|startoftext|>", "<|endoftext|>"]
vocab = json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False)
merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
seed("tokenizer_files", "small", vocab.encode() + b"\x00" + merges_txt.encode())

# --- dataset lists ----------------------------------------------------------------------------
split = {"train": [["a/1.jpg", 0, "a_cat"], ["b/2.jpg", 1, "dog"]], "val": [],
         "test": [["a/3.jpg", 0, "a_cat"]]}
seed("data_lists", "split", b"\x00" + json.dumps(split).encode())
seed("data_lists", "split_empty", b"\x00" + b'{"train": [], "val": [], "test": []}')
seed("data_lists", "csv", b"\x01path,label,classname\na.jpg,0,cat\nb.jpg,1\n\x00cat\ndog\n")
seed("data_lists", "json_rows",
     b'\x02[["a.jpg", 0, "cat"], {"path": "b.jpg", "label": 1}]\x00cat\ndog\n')
seed("data_lists", "json_splits", b'\x02{"train": [["a.jpg", 0]], "test": [["b.jpg", 0]]}')
seed("data_lists", "classnames", b"\x03n01440764 tench\nn01443537 goldfish\n")
seed("data_lists", "aircraft",
     b"\x04707-320\nA300B4\n\x001025794 707-320\n\x001340192 A300B4\n\x000056978 707-320\n")
