"""OpenAI-format CLIP checkpoints run through open_clip, with the numbers of ``clip.load``.

Any OpenAI CLIP file loads: the TorchScript archive OpenAI distributes (``ViT-L-14.pt``) or a
plain state dict with the same key names. Neither runs code from the file: the archive's tensors
are read as data (never ``torch.jit.load``), a state dict through ``torch.load(weights_only=True)``.
The architecture is read from the weights by open_clip's ``build_model_from_openai_state_dict`` (the
same reading as OpenAI's ``build_model``). What makes the
numbers match the reference:

* QuickGELU activations (OpenAI trained with them) and the text tower's causal mask
  (open_clip's ``CLIP`` class, the same module names as OpenAI's, so the keys load strictly);
* the weights OpenAI keeps in float16 are rounded through float16 even when we run in float32,
  exactly as ``build_model`` (``convert_weights`` before ``load_state_dict``) then ``.float()``;
* OpenAI's BPE tokenizer with ``truncate=True`` semantics (the last kept token becomes EOT).
"""

from __future__ import annotations

import ast
import collections
import io
import pickle
import re
import zipfile
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import regex
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, build_model_from_openai_state_dict, convert_weights_to_lp
from open_clip.tokenizer import SimpleTokenizer
from torch import Tensor

__all__ = [
    "OPENAI_MEAN",
    "OPENAI_STD",
    "ClipModel",
    "build_clip",
    "load_clip",
    "normalize_uint8",
    "read_clip_state_dict",
    "read_torchscript_tensors",
    "tokenize",
]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
CONTEXT_LENGTH = 77

def build_clip(state_dict: Mapping[str, Tensor], device: str | torch.device | None = None) -> CLIP:
    """The open_clip ``CLIP`` whose architecture OpenAI-format weights describe, with them loaded
    strictly (open_clip's ``build_model_from_openai_state_dict``, quick GELU, OpenAI's float16
    weights kept float16 and its LayerNorm computing in float32).

    ``device="meta"`` builds and checks it without memory (key sets and shapes).
    """
    with torch.device(device) if device is not None else nullcontext():
        return build_model_from_openai_state_dict(dict(state_dict), quick_gelu=True, cast_dtype=torch.float16)


def read_clip_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a CLIP checkpoint file on CPU, from a TorchScript archive or a pickled dict.

    Nothing in the file is executed: a TorchScript archive is read as data (see
    ``read_torchscript_tensors``), a pickled dict through ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP weights not found: {path}")
    if _looks_like_torchscript(path):
        loaded: object = read_torchscript_tensors(path)
    else:
        try:
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle/zip/EOF errors come in many types; report them uniformly
            raise ValueError(
                f"{path} is not a CLIP checkpoint (neither TorchScript nor a state dict): {exc}"
            ) from exc
    if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise ValueError(f"{path} is not a CLIP checkpoint: expected a state dict of tensors")
    return {str(k): v for k, v in loaded.items()}


def _looks_like_torchscript(path: Path) -> bool:
    # torch.save also writes zip archives; only TorchScript ones carry constants.pkl and code/.
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


# --------------------------------------------------------------------------------------------------------
# TorchScript archives, read as data
# --------------------------------------------------------------------------------------------------------
#
# ``torch.jit.load`` compiles the archive's ``code/`` and runs its ``__setstate__`` methods, so a crafted
# file runs its own code when loaded. OpenAI distributes CLIP as such an archive; all we need from it is
# its ``state_dict()``: the parameters and buffers of each module. They are in ``data.pkl`` (a pickle of
# the module tree whose tensors point at ``data/<key>`` entries), and each module class in ``code/``
# declares which of its attributes are parameters and buffers. We read both as data: the pickle through
# an unpickler that knows only tensors and plain containers, the class declarations as text.

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_CLASS_LINE = re.compile(r"^class (\w+)\(", re.MULTILINE)
_DECLARED = re.compile(r"^  __(parameters|buffers)__ = (\[[^\]\n]*\])", re.MULTILINE)
_CUSTOM_STATE = re.compile(r"^  def __setstate__\(", re.MULTILINE)


class _ScriptObject:
    """Stands in for an instance of a TorchScript class: keeps its pickled state, runs none of its code."""

    qualname = ""
    state: object = None

    def __setstate__(self, state: object) -> None:  # pickle's BUILD: store, do not interpret
        self.state = state


@dataclass(frozen=True)
class _Storage:
    dtype: torch.dtype


def _rebuild_tensor(storage: Tensor, offset: int, size: tuple, stride: tuple, *_: object) -> Tensor:
    return torch.as_strided(storage, tuple(size), tuple(stride), int(offset))


def _rebuild_parameter(data: Tensor, *_: object) -> Tensor:
    return data


def _same(value: object, *_: object) -> object:
    return value


# (module, name) in the pickle → what it becomes here. Everything else is refused.
_SAFE_GLOBALS: dict[tuple[str, str], object] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.jit._pickle", "restore_type_tag"): _same,
    **{("torch.jit._pickle", f"build_{kind}list"): _same for kind in ("int", "double", "bool", "tensor")},
    **{("torch", name): _Storage(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _ArchiveUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: Path) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.path = archive, prefix, path
        self.classes: dict[str, type[_ScriptObject]] = {}

    def find_class(self, module: str, name: str) -> object:
        if module == "__torch__" or module.startswith("__torch__."):
            qualname = f"{module}.{name}"
            if qualname not in self.classes:
                self.classes[qualname] = type(name, (_ScriptObject,), {"qualname": qualname})
            return self.classes[qualname]
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise ValueError(
                f"{self.path}: its data.pkl refers to {module}.{name}, which a TorchScript checkpoint of "
                "tensors does not need; refusing to load it"
            ) from None

    def persistent_load(self, pid: object) -> Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ValueError(f"{self.path}: unexpected persistent reference {pid!r} in data.pkl")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _Storage):
            raise ValueError(f"{self.path}: unexpected storage type {kind!r} in data.pkl")
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        if len(raw) == 0:
            return torch.empty(0, dtype=kind.dtype)
        flat = torch.frombuffer(bytearray(raw), dtype=kind.dtype)
        if flat.numel() != numel:
            raise ValueError(
                f"{self.path}: storage {key} holds {flat.numel()} elements, data.pkl says {numel}"
            )
        return flat


def read_torchscript_tensors(path: str | Path) -> dict[str, Tensor]:
    """The ``state_dict()`` of a TorchScript archive (parameters and buffers), without running its code.

    ValueError when the archive is not one we can read as data: a module with its own ``__setstate__``
    (its state would only be meaningful through that code), an unknown pickle global, or a big-endian file.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise ValueError(f"{path} is not a TorchScript archive: no single <name>/data.pkl")
            prefix = pickles[0].rsplit("/", 1)[0]
            byteorder = f"{prefix}/byteorder"
            if byteorder in names and archive.read(byteorder).strip() != b"little":
                raise ValueError(f"{path}: big-endian TorchScript archives are not supported")
            declared = _declared_state(archive, prefix, names)
            unpickler = _ArchiveUnpickler(archive.read(pickles[0]), archive, prefix, path)
            try:
                root = unpickler.load()
            except ValueError:
                raise
            except Exception as exc:  # a malformed pickle: many exception types, one answer
                raise ValueError(f"{path}: unreadable TorchScript data.pkl: {exc!r}") from exc
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise ValueError(f"{path} is not a readable TorchScript archive: {exc}") from exc
    state: dict[str, Tensor] = {}
    _collect(root, "", declared, state, path)
    return state


def _declared_state(archive: zipfile.ZipFile, prefix: str, names: list[str]) -> dict[str, set[str] | None]:
    """Class qualname → the attribute names it declares as ``__parameters__`` and ``__buffers__``.

    None for a class with its own ``__setstate__``: its pickled state means what that code makes of it.
    """
    code = f"{prefix}/code/"
    declared: dict[str, set[str] | None] = {}
    for name in names:
        if not (name.startswith(code) and name.endswith(".py")):
            continue
        module = name[len(code) : -len(".py")].replace("/", ".")
        text = archive.read(name).decode("utf-8", "replace")
        starts = [(m.start(), m.group(1)) for m in _CLASS_LINE.finditer(text)] + [(len(text), "")]
        for (begin, cls), (end, _) in zip(starts, starts[1:], strict=False):
            attrs: set[str] = set()
            for match in _DECLARED.finditer(text, begin, end):
                listed = ast.literal_eval(match.group(2))  # a list of string literals, nothing else
                attrs.update(str(a) for a in listed)
            custom = _CUSTOM_STATE.search(text, begin, end) is not None
            declared[f"{module}.{cls}"] = None if custom else attrs
    return declared


def _collect(
    obj: object, prefix: str, declared: dict[str, set[str] | None], out: dict[str, Tensor], path: Path
) -> None:
    if not isinstance(obj, _ScriptObject):
        return
    if not isinstance(obj.state, dict) or (obj.qualname in declared and declared[obj.qualname] is None):
        raise ValueError(
            f"{path}: module {prefix.rstrip('.') or '<root>'} ({obj.qualname}) restores its state with its "
            "own __setstate__ code, which vidscore does not run; refusing to load this checkpoint "
            "(save the model's state_dict() with torch.save instead)"
        )
    wanted = declared.get(obj.qualname)  # no code for the class: every tensor attribute
    for attr, value in obj.state.items():
        if isinstance(value, Tensor):
            if wanted is None or attr in wanted:
                out[f"{prefix}{attr}"] = value
        elif isinstance(value, _ScriptObject):
            _collect(value, f"{prefix}{attr}.", declared, out, path)


class _OpenAITokenizer(SimpleTokenizer):
    """open_clip's copy of OpenAI's BPE, with OpenAI's spelling of the two special tokens.

    open_clip names them ``<start_of_text>``/``<end_of_text>``; OpenAI's tokenizer turns a
    literal ``<|endoftext|>`` in a caption into the special token, so we do the same.
    """

    def __init__(self) -> None:
        super().__init__(context_length=CONTEXT_LENGTH)
        specials = {"<|startoftext|>": self.sot_token_id, "<|endoftext|>": self.eot_token_id}
        self.encoder.update(specials)
        self.cache = {t: t for t in specials}
        self.pat = regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )


@lru_cache(maxsize=1)
def _tokenizer() -> _OpenAITokenizer:
    return _OpenAITokenizer()  # reading the BPE merges takes a moment: do it once per process


def tokenize(texts: list[str], context_length: int = CONTEXT_LENGTH) -> Tensor:
    """``clip.tokenize(texts, truncate=True)`` as int64 [N, context_length]; EOT kept when cut."""
    tok = _tokenizer()
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [tok.sot_token_id, *tok.encode(text), tok.eot_token_id]
        if len(ids) > context_length:
            ids = ids[:context_length]
            ids[-1] = tok.eot_token_id
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def normalize_uint8(frames: Tensor) -> Tensor:
    """uint8 [N, S, S, 3] → float32 [N, 3, S, S]: ToTensor (/255) then CLIP's Normalize, bit for bit."""
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [N, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    # contiguous CHW like ToTensor, so convolutions see the same memory layout as the reference.
    x = frames.permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)
    mean = torch.tensor(OPENAI_MEAN, dtype=torch.float32, device=frames.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD, dtype=torch.float32, device=frames.device).view(1, 3, 1, 1)
    return x.sub(mean).div(std)


@dataclass
class ClipModel:
    """A loaded CLIP model: embeddings and exp(logit_scale)-scaled cosine scores."""

    model: CLIP
    logit_scale: float  # the raw checkpoint value (ln of the temperature)
    logit_scale_exp: float  # exp of the float32 parameter, as the reference's .exp().item()
    device: torch.device
    dtype: torch.dtype
    path: Path | None = field(default=None)

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1])

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size  # (h, w) for a ViT tower, an int for a ResNet one
        return int(size[0] if isinstance(size, tuple) else size)

    @property
    def context_length(self) -> int:
        return int(self.model.context_length)

    normalize_uint8 = staticmethod(normalize_uint8)

    def encode_images(self, pixels: Tensor) -> Tensor:
        """Normalized pixels [N, 3, S, S] → L2-normalized float32 embeddings [N, embed_dim]."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected pixels [N, 3, H, W], got {tuple(pixels.shape)}")
        with torch.inference_mode():
            # Inputs take the stem's dtype, as OpenAI's encode_image does (float16 weights on CUDA).
            feats = self.model.encode_image(pixels.to(self.device, self.model.visual.conv1.weight.dtype))
            return F.normalize(feats.float(), p=2, dim=-1)

    def encode_tokens(self, tokens: Tensor) -> Tensor:
        """Token ids [N, context_length] (from ``tokenize``) → L2-normalized float32 [N, embed_dim]."""
        with torch.inference_mode():
            feats = self.model.encode_text(tokens.to(self.device, torch.long))
            return F.normalize(feats.float(), p=2, dim=-1)

    def encode_texts(self, texts: list[str]) -> Tensor:
        """Captions → L2-normalized float32 [N, embed_dim] (CLIP BPE, 77 tokens, truncated)."""
        if not texts:
            return torch.empty(0, self.embed_dim, device=self.device)
        return self.encode_tokens(tokenize(list(texts), self.context_length))

    def match_scores(self, image_emb: Tensor, text_emb: Tensor) -> Tensor:
        """Row-wise exp(logit_scale) · cosine for pairs of normalized embeddings → [N]."""
        if image_emb.shape != text_emb.shape:
            raise ValueError(
                f"embeddings differ in shape: {tuple(image_emb.shape)} vs {tuple(text_emb.shape)}"
            )
        # A Python float times the float32 products, as the reference computes it.
        return self.logit_scale_exp * (image_emb * text_emb).sum(dim=1)


def load_clip(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> ClipModel:
    """Load an OpenAI-format CLIP checkpoint strictly; float32 reproduces ``clip.load`` on CPU.

    ``dtype=torch.float16`` keeps OpenAI's mixed precision (what ``clip.load`` gives on CUDA);
    ``torch.bfloat16`` does the same with bfloat16.
    """
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"unsupported CLIP dtype {dtype}: use float32, float16 or bfloat16")
    path = Path(path)
    state = read_clip_state_dict(path)
    state.pop("attn_mask", None)  # a traced open_clip model's fixed causal mask, not a parameter
    try:
        model = build_clip(state)
    except (KeyError, IndexError, AttributeError) as exc:
        raise ValueError(f"{path} is not a CLIP checkpoint (not an OpenAI-format CLIP state dict): missing {exc}") from exc
    except RuntimeError as exc:
        raise ValueError(f"{path} does not fit the CLIP architecture read from it: {exc}") from exc
    if dtype == torch.float32:
        model = model.float()
    elif dtype == torch.bfloat16:
        model = model.float()
        convert_weights_to_lp(model, dtype=torch.bfloat16)
    dev = torch.device(device)
    model = model.to(dev).eval().requires_grad_(False)
    raw = model.logit_scale.detach().float().cpu()
    return ClipModel(
        model=model,
        logit_scale=float(raw.item()),
        logit_scale_exp=float(raw.exp().item()),
        device=dev,
        dtype=dtype,
        path=path,
    )
