"""Hugging Face data sets as validation data (stages/hf_datasets.py), on small data sets the tests make: an image
folder of the digits as PNGs, a text data set saved with save_to_disk and a tokenizer saved beside a tiny model."""
import collections
import json

import numpy as np
import pytest

from pipeline import results
from pipeline.config.trust import untrusted
from stages import datasets as data_sets
from stages import hf_datasets
from tests.conftest import FAST, run_cli

datasets = pytest.importorskip("datasets")
LOADER = "stages.hf_datasets.load"
IMAGE_ARGS = {"inputs": {"input": "image"}, "labels": "label", "preprocess": "image", "image_size": 8,
              "crop_pct": 1.0, "mean": [0.0], "std": [1.0], "interpolation": "bilinear"}


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def digit_folder(root, split="test"):
    """The digits of `split` as 8-bit grayscale PNGs in one folder per label (imagefolder's layout)."""
    from PIL import Image

    digits = data_sets.digits(split)[0]
    for i, (image, label) in enumerate(zip(digits["input"][:, 0], digits["labels"])):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L").save(root / str(label) / f"{i:04d}.png")
    return digits


def as_counts(images, labels):
    """The samples as a multiset (an image folder is read in path order, not the data set's)."""
    return collections.Counter((int(lab), np.round(img * 16).astype(int).tobytes()) for img, lab in zip(images, labels))


def test_an_image_folder_gives_the_digits_back(tmp_path):
    digits = digit_folder(tmp_path / "digits")
    loaded = list(hf_datasets.load(str(tmp_path / "digits"), batch=100, **IMAGE_ARGS))
    assert [len(b["input"]) for b in loaded] == [100, 100, 100, 59]
    images = np.concatenate([b["input"] for b in loaded])
    labels = np.concatenate([b["labels"] for b in loaded])
    assert images.shape == digits["input"].shape and images.dtype == np.float32
    assert np.abs(np.sort(images.ravel()) - np.sort(digits["input"].ravel())).max() <= 0.5 / 255 + 1e-6
    assert as_counts(images, labels) == as_counts(digits["input"][:, 0][:, None], digits["labels"])


def test_resize_and_crop_follow_timms_eval_transform(tmp_path):
    from PIL import Image

    (tmp_path / "pics/a").mkdir(parents=True)
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 10:30] = 255  # a white band in the middle 20 columns of 40
    Image.fromarray(wide).save(tmp_path / "pics/a/0.png")
    args = {**IMAGE_ARGS, "labels": None, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "image_size": 10}
    image = next(hf_datasets.load(str(tmp_path / "pics"), **args))["input"][0]
    # shorter side 20 -> 10 (40 -> 20 wide), then the centre 10x10: the band fills it, normalised to 1.0
    assert image.shape == (3, 10, 10) and np.allclose(image[:, :, 1:-1], 1.0, atol=0.02)


def test_a_saved_text_data_set_is_tokenized_with_the_models_tokenizer(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    vocab = {"[PAD]": 0, "[UNK]": 1, "good": 2, "bad": 3, "film": 4, "very": 5}
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=model, pad_token="[PAD]", unk_token="[UNK]")
    saved = tmp_path / "model"
    transformers.BertModel(transformers.BertConfig(vocab_size=6, hidden_size=8, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=8)).save_pretrained(saved)
    tok.save_pretrained(saved)
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict(
        {"sentence": ["good film", "very bad film", "meh"], "label": [1, 0, 0]})}).save_to_disk(tmp_path / "reviews")
    batch = next(hf_datasets.load(str(tmp_path / "reviews"), split="validation", preprocess="text", text="sentence",
                                  tokenizer=str(saved), max_length=4, labels="label"))
    assert batch["input_ids"].tolist() == [[2, 4, 0, 0], [5, 3, 4, 0], [1, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["labels"].tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match=r"split = 'test': .* has splits \['validation'\]"):
        hf_datasets.load(str(tmp_path / "reviews"), split="test", preprocess="text", text="sentence",
                         tokenizer=str(saved), max_length=4)


def test_parquet_and_csv_columns_map_to_inputs(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"x": [[1.0, 2.0], [3.0, 4.0]], "y": [1, 0]})
    frame.to_parquet(tmp_path / "d.parquet")
    batch = next(hf_datasets.load(str(tmp_path / "d.parquet"), inputs={"input": "x"}, labels="y"))
    assert batch["input"].tolist() == [[1.0, 2.0], [3.0, 4.0]] and batch["labels"].tolist() == [1, 0]
    pd.DataFrame({"a": [0.5, 1.5], "y": [2, 3]}).to_csv(tmp_path / "d.csv", index=False)
    batch = next(hf_datasets.load(str(tmp_path / "d.csv"), inputs={"input": "a"}, labels="y"))
    assert batch["input"].tolist() == [0.5, 1.5] and batch["labels"].tolist() == [2, 3]
    with pytest.raises(ValueError, match=r"column\(s\) \['nope'\] not in the data set"):
        hf_datasets.load(str(tmp_path / "d.csv"), inputs={"input": "nope"})
    with pytest.raises(ValueError, match="preprocess = 'audio': valid: none, image, text"):
        hf_datasets.load(str(tmp_path / "d.csv"), inputs={"input": "a"}, preprocess="audio")


def test_the_loader_is_trusted_and_its_data_set_is_keyed_by_content(tmp_path):
    assert untrusted({"validate": {"data": {"_target_": LOADER, "dataset": "x"}}}) == []
    (tmp_path / "d.csv").write_text("a,y\n1,0\n")
    source = {"_target_": LOADER, "dataset": str(tmp_path / "d.csv"), "inputs": {"input": "a"}}
    before = data_sets.digest(source)
    (tmp_path / "d.csv").write_text("a,y\n2,0\n")  # same path, same arguments, other data: another calibration
    assert data_sets.digest(source) != before


@pytest.mark.slow
def test_validation_on_an_image_folder_gives_the_same_top1_as_the_digits(tmp_path, tmp_path_factory):
    """The digits model validated on its held-out digits as PNGs through the loader, and as built in."""
    digit_folder(tmp_path / "digits")
    cache = f"cache.dir={tmp_path_factory.getbasetemp() / 'digits-cache'}"  # shared with tests/test_mlflow_tracking.py
    args = {**IMAGE_ARGS, "dataset": str(tmp_path / "digits"), "split": "train"}  # imagefolder's only split
    hf = "validate.data={_target_:" + LOADER + "," + json.dumps(args)[1:].replace('"', "").replace(" ", "")
    for name, extra in (("builtin", []), ("hf", ["validate.data=null", hf])):  # replaced, not merged into digits'
        proc = run_cli([*FAST, f"hydra.run.dir={name}", cache, *extra], tmp_path)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    top1 = {}
    for name in ("builtin", "hf"):
        acc = results.load(tmp_path / name).accuracy.set_index("metric")
        top1[name] = (acc.loc["top1_accuracy", "value"], acc.loc["top1_accuracy", "samples"])
    assert top1["hf"] == top1["builtin"], top1


def test_calibration_takes_the_loader_and_a_bad_key_is_one_line_naming_it(tmp_path):
    from stages.api import StageInputError
    from stages.inputs import InputSpec

    digit_folder(tmp_path / "digits", split="train")
    specs = [InputSpec("input", ("batch", 1, 8, 8), np.dtype(np.float32))]
    source = {"_target_": LOADER, "dataset": str(tmp_path / "digits"), **IMAGE_ARGS}
    feeds = {"batch_size": 1, "axes": {}, "data": {"calibration": source}}
    data_sets.check_all(feeds, specs)
    calibrated = list(data_sets.calibration(specs, feeds, {"samples": 50, "data": source}, seed=0, batch=16))
    assert [len(b["input"]) for b in calibrated] == [16, 16, 16, 2] and "labels" not in calibrated[0]
    with pytest.raises(StageInputError) as err:
        data_sets.check_all({**feeds, "data": {"calibration": {**source, "labels": "digit"}}}, specs)
    assert str(err.value).startswith("convert.calibration.data._target_ = 'stages.hf_datasets.load' failed: "
                                     "ValueError: column(s) ['digit'] not in the data set"), err.value


def test_an_image_folder_with_a_metadata_csv_takes_its_columns(tmp_path):
    from PIL import Image

    (tmp_path / "pics").mkdir()
    for i in range(3):
        Image.fromarray(np.full((4, 4), 60 * i, np.uint8), mode="L").save(tmp_path / f"pics/{i}.png")
    (tmp_path / "pics/metadata.csv").write_text("file_name,digit\n0.png,7\n1.png,8\n2.png,9\n")
    batch = next(hf_datasets.load(str(tmp_path / "pics"), **{**IMAGE_ARGS, "labels": "digit", "image_size": 4}))
    by_label = dict(zip(batch["labels"].tolist(), batch["input"][:, 0, 0, 0].tolist()))
    assert by_label == pytest.approx({7: 0.0, 8: 60 / 255, 9: 120 / 255})
