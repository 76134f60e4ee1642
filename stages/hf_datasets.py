"""Hugging Face `datasets` as validation and calibration data: `validate.data` or `convert.calibration.data` =
`{_target_: stages.hf_datasets.load, dataset: DIR, ...}` (pip install -e '.[datasets]').

`dataset` is a directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, or a local folder (or file)
of Parquet, CSV or images that `datasets.load_dataset` reads with its packaged builders (`imagefolder` takes the
labels from the sub-folder names). Columns become the model's inputs by `inputs: {<model input>: <column>}`, and
`labels: <column>` gives the class indices. A named preprocessing turns raw columns into arrays:
- `preprocess: image`: each mapped column holds images, resized, centre-cropped and normalised as timm's eval
  transform does, with `timm.data.resolve_data_config` deciding the values where timm is installed (for
  `timm_model: <name>`, that model's pretrained config); without timm from the same defaults and the explicit keys
  `image_size`, `crop_pct`, `mean`, `std`, `interpolation`.
- `preprocess: text`: the `text` column through the tokenizer saved in `tokenizer: DIR` (a local Hugging Face model
  directory, `model.path`), padded and truncated to `max_length`; it gives `input_ids`, `attention_mask` (and
  `token_type_ids` where the tokenizer makes them), of which the model takes the ones it has.
- `preprocess: none`: the columns hold numbers or arrays already.
Nothing is downloaded: the tokenizer is read with local files only and remote code is never run.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Iterator

import numpy as np

from stages.api import StageInputError

PREPROCESS = ("none", "image", "text")
SAVED = ("dataset_info.json", "dataset_dict.json", "state.json")  # what save_to_disk writes
BUILDERS = {".parquet": "parquet", ".csv": "csv", ".png": "imagefolder", ".jpg": "imagefolder",
            ".jpeg": "imagefolder", ".bmp": "imagefolder", ".webp": "imagefolder"}
# timm's eval defaults (timm.data.constants), used where timm is not installed
DEFAULT_CROP_PCT, DEFAULT_INTERPOLATION = 0.875, "bicubic"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load(dataset: str, inputs: dict | None = None, labels: str | None = None, split: str | None = None,
         preprocess: str = "none", text: str | None = None, tokenizer: str | None = None,
         max_length: int | None = None, timm_model: str | None = None, image_size: int | None = None,
         crop_pct: float | None = None, mean: list | None = None, std: list | None = None,
         interpolation: str | None = None, batch: int = 64) -> Iterator[dict[str, np.ndarray]]:
    """Batches of `batch` samples: a dict of arrays by model input name, with `labels` where a column is named.
    The data set is opened and its columns checked here, before the first batch is asked for, so a bad key fails as
    the call (which the caller reports under its config key)."""
    if preprocess not in PREPROCESS:
        raise ValueError(f"preprocess = '{preprocess}': valid: {', '.join(PREPROCESS)}")
    inputs = dict(inputs or {})
    if preprocess == "text":
        if not text or not tokenizer:
            raise ValueError("preprocess = 'text' needs text: <the text column> and tokenizer: <a saved model's "
                             "directory>")
        encode = _tokenizer(tokenizer, max_length)
    elif not inputs:
        raise ValueError("inputs = {}: map each model input to a column, e.g. inputs: {pixel_values: image}")
    table = _open(dataset, split)
    wanted = [*inputs.values(), *([text] if preprocess == "text" else []), *([labels] if labels else [])]
    unknown = [c for c in wanted if c not in table.column_names]
    if unknown:
        raise ValueError(f"column(s) {unknown} not in the data set '{dataset}'; it has {table.column_names}")
    image = _image_transform(timm_model, image_size, crop_pct, mean, std, interpolation) \
        if preprocess == "image" else None
    return _batches(table.select_columns(list(dict.fromkeys(wanted))), inputs, labels, text if preprocess == "text"
                    else None, encode if preprocess == "text" else None, image, batch)


def _batches(table, inputs: dict, labels: str | None, text: str | None, encode, image, batch: int
             ) -> Iterator[dict[str, np.ndarray]]:
    for rows in table.iter(batch_size=batch):
        out = {}
        for name, column in inputs.items():
            values = rows[column]
            out[name] = np.stack([image(v) for v in values]) if image else np.asarray(values)
        if text:
            out.update(encode(rows[text]))
        if labels:
            out["labels"] = np.asarray(rows[labels], dtype=np.int64)
        yield out


def content_digest(dataset: str) -> str:
    """The data set by content, for cache keys: every file's relative name and bytes."""
    root, h = Path(dataset), hashlib.sha256()
    if not root.exists():
        raise StageInputError(f"data: dataset = '{dataset}': no such file or directory")
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for file in files:
        h.update(f"{file.relative_to(root) if root.is_dir() else file.name} ".encode())
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _open(dataset: str, split: str | None):
    """The Dataset of `split` (the only one where there is one) of a saved data set or a local folder or file."""
    import datasets

    root = Path(dataset)
    if not root.exists():
        raise ValueError(f"dataset = '{dataset}': no such file or directory")
    if root.is_dir() and any((root / name).is_file() for name in SAVED):
        loaded = datasets.load_from_disk(str(root))
    else:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        builders = {BUILDERS[p.suffix.lower()] for p in files if p.suffix.lower() in BUILDERS}
        if "imagefolder" in builders:  # images, with an optional metadata.csv of further columns
            builders = {"imagefolder"}
        if len(builders) != 1:
            raise ValueError(f"dataset = '{dataset}': not a saved data set (save_to_disk) nor a folder of one kind of "
                             f"{', '.join(sorted(BUILDERS))} files (found {sorted(builders) or 'none'})")
        builder = builders.pop()
        where = {"data_files": str(root)} if root.is_file() else {"data_dir": str(root)}
        loaded = datasets.load_dataset(builder, **where)
    if isinstance(loaded, datasets.Dataset):
        return loaded
    names = list(loaded)
    if split is None and len(names) == 1:
        return loaded[names[0]]
    if split not in loaded:
        raise ValueError(f"split = {split!r}: the data set '{dataset}' has splits {names}")
    return loaded[split]


def _tokenizer(directory: str, max_length: int | None):
    from transformers import AutoTokenizer

    if not Path(directory).is_dir():
        raise ValueError(f"tokenizer = '{directory}': not a directory (a saved Hugging Face model's, with its "
                         f"tokenizer files)")
    if not max_length:
        raise ValueError("max_length is needed with preprocess = 'text': the run's sequence length (axes.sequence)")
    tok = AutoTokenizer.from_pretrained(directory, local_files_only=True)

    def encode(texts: list[str]) -> dict[str, np.ndarray]:
        coded = tok(list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
        return {k: np.asarray(v, dtype=np.int64) for k, v in coded.items()}

    return encode


def _image_transform(timm_model, image_size, crop_pct, mean, std, interpolation):
    """timm's eval transform (resize the shorter side to size / crop_pct, centre-crop, scale to [0, 1], normalise)
    as a function of one PIL image to a (channels, size, size) float32 array."""
    from PIL import Image

    config = _data_config(timm_model, image_size, crop_pct, mean, std, interpolation)
    channels, size = config["input_size"][0], config["input_size"][1]
    scale = math.floor(size / config["crop_pct"])
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
                "lanczos": Image.LANCZOS}.get(config["interpolation"])
    if resample is None:
        raise ValueError(f"interpolation = '{config['interpolation']}': valid: bilinear, bicubic, nearest, lanczos")
    m = np.asarray(config["mean"], dtype=np.float32).reshape(-1, 1, 1)
    s = np.asarray(config["std"], dtype=np.float32).reshape(-1, 1, 1)

    def transform(img) -> np.ndarray:
        img = img.convert("L" if channels == 1 else "RGB")
        w, h = img.size
        short = min(w, h)
        if short != scale:
            w, h = (scale, int(scale * h / w)) if w <= h else (int(scale * w / h), scale)
            img = img.resize((w, h), resample)
        left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
        img = img.crop((left, top, left + size, top + size))
        array = np.asarray(img, dtype=np.float32) / 255.0
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return (array - m) / s

    return transform


def _data_config(timm_model, image_size, crop_pct, mean, std, interpolation) -> dict:
    """input_size, interpolation, mean, std, crop_pct: timm's resolve_data_config where timm imports, else the same
    defaults with the explicit keys."""
    channels = len(mean) if mean is not None else 3
    explicit = {"input_size": (channels, image_size, image_size) if image_size else None, "crop_pct": crop_pct,
                "mean": mean, "std": std, "interpolation": interpolation}
    try:
        import timm
        from timm.data import resolve_data_config
    except ImportError:
        if timm_model:
            raise ValueError(f"timm_model = '{timm_model}' needs timm (pip install timm), or give image_size, "
                             f"crop_pct, mean and std") from None
        if not image_size:
            raise ValueError("image_size is needed with preprocess = 'image' (without timm)") from None
        return {"input_size": explicit["input_size"], "crop_pct": crop_pct or DEFAULT_CROP_PCT,
                "interpolation": interpolation or DEFAULT_INTERPOLATION, "mean": mean or IMAGENET_MEAN,
                "std": std or IMAGENET_STD}
    pretrained = timm.get_pretrained_cfg(timm_model) if timm_model else None
    args = {k: v for k, v in explicit.items() if v is not None}
    return resolve_data_config(args=args or {"input_size": None}, pretrained_cfg=pretrained.to_dict()
                               if pretrained is not None else None)
