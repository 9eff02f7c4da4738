"""A user's journeys, run as written: README blocks and shipped configs.

The README's command-line block and Python block are read from README.md
itself, so editing the README changes what is tested. Commands run through
the real `keras-superclass` entry point (`cli.main.main`) in a fresh folder
on data made here; `train` lines get tiny sizes appended.
"""

import json
import os
import re
import shlex
import tarfile

import keras
import numpy as np
import pytest
from PIL import Image

from keras_superclass.cli.main import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = (
    "training.total_steps=2",
    "training.steps_per_epoch=1",
    "training.global_batch_size=8",
)
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def readme_block(language, containing):
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    blocks = re.findall(rf"```{language}\n(.*?)```", text, re.S)
    matching = [b for b in blocks if containing in b]
    assert matching, f"README.md has no {language} block with {containing!r}"
    return matching[0]


def run_cli(line, capsys):
    args = shlex.split(line.split("#")[0])[1:]
    if args[0] == "train":
        args += TINY
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, f"`{line}` exited {code}:\n{err[-2000:]}"
    return out


def write_user_data(root, count=24):
    """Images + captions CSV, a WebDataset tar and probe class folders."""
    rng = np.random.default_rng(0)
    os.makedirs(root / "images")
    rows = ["file,caption"]
    for i in range(count):
        name = list(COLOURS)[i % 3]
        pixels = np.full((48 + i, 64, 3), COLOURS[name], "uint8")
        pixels += rng.integers(0, 20, pixels.shape, dtype="uint8")
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
        rows.append(f"{i}.png,a {name} picture of a square number {i % 4}")
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    os.makedirs(root / "webdataset")
    with tarfile.open(root / "webdataset" / "part-0.tar", "w") as tar:
        for i in range(6):
            tar.add(root / "images" / f"{i}.png", arcname=f"s{i}.png")
            caption = root / f"s{i}.txt"
            caption.write_text(f"a photo number {i}")
            tar.add(caption, arcname=f"s{i}.txt")
    table = ["file,label,split"]
    for split in ("train", "test"):
        for name, colour in COLOURS.items():
            folder = root / "probe" / split / name
            os.makedirs(folder)
            for i in range(10):  # the probe's default shots: 1, 5, 10
                pixels = np.full((40, 56, 3), colour, "uint8")
                pixels += rng.integers(0, 40, pixels.shape, dtype="uint8")
                Image.fromarray(pixels).save(folder / f"{i}.jpg")
                table.append(f"probe/{split}/{name}/{i}.jpg,{name},{split}")
    (root / "labels.csv").write_text("\n".join(table) + "\n")


@pytest.mark.skipif(
    keras.config.backend() != "jax",
    reason="One pass over the README commands per suite run (jax) keeps CI "
    "time down; the config journeys below cover the other backends.",
)
def test_readme_command_lines_run_as_written(tmp_path, monkeypatch, capsys):
    write_user_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    lines = [
        line
        for line in readme_block("bash", "keras-superclass shards").splitlines()
        if line.startswith("keras-superclass ")
    ]
    assert len(lines) >= 10
    outputs = {line: run_cli(line, capsys) for line in lines}
    predict = next(out for line, out in outputs.items() if " predict " in line)
    assert predict.startswith("images/0.png: ")
    with open("eval/results.json") as f:
        assert "linear_probe" in json.load(f)
    assert os.path.isfile("demo_output/synset_vocabulary.json")


@pytest.mark.skipif(
    keras.config.backend() != "tensorflow",
    reason="The README's fine-tuning block runs once per suite run "
    "(tensorflow: the fastest fit here); the tests of test_finetune.py run "
    "its pieces on every backend.",
)
def test_readme_finetune_block_runs_as_written(tmp_path, monkeypatch, capsys):
    from test_finetune import save_pretrained

    write_user_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    save_pretrained("my_preset")
    block = readme_block("bash", "keras-superclass finetune")
    lines = [x for x in block.splitlines() if x.startswith("keras-superclass")]
    assert len(lines) == 4
    for line in lines:
        if " finetune " in line:
            line = line.split("#")[0] + " --epochs 1 --batch-size 8"
        out = run_cli(line, capsys)
    assert out.startswith("probe/test/red/0.jpg: ")
    assert {word for word in out.split() if word.isalpha()} <= set(COLOURS)
    for out in ("my_classifier", "scratch"):
        with open(f"{out}/finetune_results.json") as f:
            assert sorted(json.load(f)["class_names"]) == sorted(COLOURS)


@pytest.mark.skipif(
    keras.config.backend() != "jax",
    reason="The README's Python block runs once per suite run (jax).",
)
def test_readme_python_block_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = readme_block("python", "image_text_dataset")
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "'label':" in out and os.path.isdir("my_superclass")


def test_readme_image_text_block_runs_without_warnings(
    tmp_path, monkeypatch, capsys
):
    import warnings

    monkeypatch.chdir(tmp_path)
    code = readme_block("python", "ImageTextModel(")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    # One predicted prompt (0 or 1) per image of the batch.
    out = capsys.readouterr().out.strip()
    assert set(out.strip("[]").split()) <= {"0", "1"} and len(out) >= 24
    ours = [str(w.message) for w in caught if "keras_superclass" in w.filename]
    assert not ours, ours


CONFIG_DIR = os.path.join(REPO, "keras_superclass", "configs")
FULL_SIZE_CONFIGS = sorted(
    name[: -len(".yaml")]
    for name in os.listdir(CONFIG_DIR)
    if name.endswith(".yaml") and "tiny" not in name
)
# Shrinks a full-size config's network to seconds on a CPU; everything else
# (tokenizer, labels, bf16, remat, accumulation, logs) stays as shipped.
SHRINK = {
    "vit": (
        "model.backbone.num_layers=1",
        "model.backbone.hidden_dim=64",
        "model.backbone.mlp_dim=128",
        "model.backbone.num_heads=2",
    ),
    "text": (
        "model.text_encoder.num_layers=1",
        "model.text_encoder.hidden_dim=32",
        "model.text_encoder.num_heads=2",
        "model.embed_dim=16",
    ),
    "crunet": (
        "model.backbone.stage_units=[1,1,1,1]",
        "model.backbone.stage_filters=[32,64,128,256]",
        "model.backbone.stage_widths=[16,32,64,128]",
        "model.backbone.cardinality=4",
        "model.backbone.cru_dims=[0,0,64,0]",
        "model.backbone.stem_filters=16",
    ),
}


@pytest.mark.skipif(
    keras.config.backend() != "torch",
    reason="Each shipped config runs once per suite run, on torch: without "
    "XLA compiling each config the test takes 45 s instead of 165 s.",
)
def test_full_size_configs_train_as_shipped_at_tiny_size(
    tmp_path, monkeypatch, capsys
):
    """Every full-size config trains a step on `keras-superclass shards`
    output at the path the configs name, shrunk only in size."""
    write_user_data(tmp_path, count=8)
    monkeypatch.chdir(tmp_path)
    for line in (
        "keras-superclass shards --images images --captions captions.csv "
        "--out data/shards --quiet",
        "keras-superclass synsets --captions 'data/shards/*.tfrecord' "
        "--out data/synset_vocabulary.json --min-count 0",
    ):
        run_cli(line, capsys)
    assert len(FULL_SIZE_CONFIGS) >= 9
    # LiT locks the encoder its cls_* twin trained (sorted: cls_ first).
    for config in FULL_SIZE_CONFIGS:
        shrink = SHRINK["crunet" if "crunet" in config else "vit"]
        if config.startswith("clip_"):
            shrink += SHRINK["text"]
        if config.startswith("lit_"):  # the encoder comes as trained
            shrink = SHRINK["text"]
            encoder = "cls_" + config[len("lit_") :]
            run_cli(
                f"keras-superclass export --run runs/{encoder} --out "
                f"presets/{encoder}",
                capsys,
            )
        size = 28 if "l14" in config else 32  # a multiple of the patch
        code = main(
            ["train", "--config", config, *shrink]
            + [
                f"model.backbone.image_shape=[{size},{size},3]",
                f"data.image_size={size}",
                "training.global_batch_size=2",
                "training.micro_batch_size=1",
                "training.total_steps=1",
                "training.steps_per_epoch=1",
                "training.warmup_steps=0",
                f"checkpoint.dir=runs/{config}",
            ]
        )
        err = capsys.readouterr().err
        assert code == 0, f"{config} exited {code}:\n{err[-2000:]}"
        assert os.path.isdir(f"runs/{config}/tensorboard"), config


JOURNEY_CONFIGS = (
    ["catlip_tiny", "cls_crunet_tiny"]
    if keras.config.backend() == "jax"
    else ["catlip_tiny"]
)


@pytest.mark.parametrize("config", JOURNEY_CONFIGS)
def test_shipped_tiny_config_train_export_predict_probe(
    config, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    write_user_data(tmp_path, count=6)
    for line in (
        "keras-superclass demo --data-only --num-train 96 --num-test 8",
        f"keras-superclass train --config {config}",
        f"keras-superclass export --run runs/{config} --out preset",
    ):
        run_cli(line, capsys)
    out = run_cli(
        "keras-superclass predict images/0.png images/1.png --preset preset "
        "--json --top-k 3",
        capsys,
    )
    records = [json.loads(line) for line in out.strip().splitlines()]
    assert [len(r["labels"]) for r in records] == [3, 3]
    assert all(isinstance(p["label"], str) for p in records[0]["labels"])
    # A mistyped path or a file that is no image: one line naming it.
    for wrong, message in (
        ("images/nope.png", "1 of 2 image files do not exist: images/nope"),
        ("captions.csv", "captions.csv is not a decodable image"),
    ):
        code = main(["predict", "images/0.png", wrong, "--preset", "preset"])
        error = capsys.readouterr().err
        assert code != 0 and message in error, error
        assert "Traceback" not in error
    run_cli(
        "keras-superclass probe --preset preset --train probe/train "
        "--test probe/test --out eval --epochs 2 --shots 1 --seeds 0 --k 3",
        capsys,
    )


def test_catlip_stops_when_no_caption_matches_the_vocabulary(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert (
        main(["demo", "--data-only", "--num-train", "64", "--num-test", "8"])
        == 0
    )
    capsys.readouterr()
    with open("other.json", "w") as f:  # a vocabulary of other data
        json.dump([{"key": "n99999999", "lemma": "zeppelin"}], f)
    code = main(
        [
            "train",
            "--config",
            "catlip_tiny",
            "data.synset_vocabulary=other.json",
        ]
        + list(TINY)
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "is padding" in err and "synset" in err
    assert not os.path.exists("runs/catlip_tiny")


def test_every_command_line_option_says_what_it_does():
    import argparse

    from keras_superclass.cli.main import build_parser

    parser = build_parser()
    (commands,) = [
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    ]
    silent = [
        f"{name} {(action.option_strings or [action.dest])[0]}"
        for name, command in commands.choices.items()
        for action in command._actions
        if not action.help and not isinstance(action, argparse._HelpAction)
    ]
    assert len(commands.choices) >= 10
    assert not silent, f"options without help: {silent}"
