"""``counterfactory export`` on the mini-run output, each export checked against its loader's own rules:
Hugging Face ``datasets`` loads its folder; LLaVA's LazySupervisedDataset/preprocess_v1 and LLaMA-Factory's
sharegpt converter and mm_plugin rules are written out here from their code (neither installs offline)."""

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

from pipeline.commands.cli import main
from tests.conftest import REPO


def accepted(out) -> list[dict]:
    return [r for r in pq.read_table(out / "manifest").to_pylist() if r["status"] == "accepted"]


def attribute_words() -> list[str]:
    """Every word the shipped taxonomy uses for an attribute value, straight from its YAML."""
    taxonomy = yaml.safe_load((REPO / "configs" / "taxonomy.yaml").read_text())
    words = set()
    for attribute in taxonomy["attributes"].values():
        for value in attribute["values"].values():
            words |= {value["label"], value["adjective"], value.get("noun", ""), *value.get("forms", {}).values()}
    return sorted(w.lower() for w in words if w)


def named_attributes(text: str) -> list[str]:
    return [w for w in attribute_words() if re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text.lower())]


def export(capsys, *args) -> tuple[int, str, str]:
    code = main(["export", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_llava_export_follows_lazy_supervised_dataset_rules(mini_output, tmp_path, capsys):
    dest = tmp_path / "llava"
    code, out, _ = export(capsys, mini_output, "--to", "llava", dest)
    assert code == 0 and "--image_folder" in out
    records = json.loads((dest / "llava.json").read_text())  # one JSON list: json.load(open(data_path))
    assert isinstance(records, list) and len(records) == len(accepted(mini_output))
    assert sorted(r["id"] for r in records) == sorted(r["sample_key"] for r in accepted(mini_output))
    for record in records:
        path = os.path.join(dest / "images", record["image"])  # train.py: os.path.join(image_folder, image_file)
        assert not os.path.isabs(record["image"]) and Image.open(path).convert("RGB").size[0] > 0
        turns = record["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2) and len(turns) % 2 == 0
        assert sum(t["value"].count("<image>") for t in turns) == 1
        assert turns[0]["value"].startswith("<image>\n") and turns[0]["value"].strip() != "<image>"
        for turn in turns:
            # preprocess_v1 splits rounds at "</s>" and " ASSISTANT: ": either inside a turn masks the sample
            assert turn["value"].strip() and "</s>" not in turn["value"] and " ASSISTANT: " not in turn["value"]
            assert named_attributes(turn["value"]) == [], turn["value"]


def test_sharegpt_export_follows_llama_factory_rules(mini_output, tmp_path, capsys):
    dest = tmp_path / "sharegpt"
    code, _, _ = export(capsys, mini_output, "--to", "sharegpt", dest, "--name", "cf_mini")
    assert code == 0
    info = json.loads((dest / "dataset_info.json").read_text())["cf_mini"]
    assert info["formatting"] == "sharegpt" and info["columns"] == {"messages": "messages", "images": "images"}
    tags = info["tags"]
    assert (tags["role_tag"], tags["content_tag"], tags["user_tag"], tags["assistant_tag"]) == (
        "role", "content", "user", "assistant")
    records = json.loads((dest / info["file_name"]).read_text())
    assert len(records) == len(accepted(mini_output))
    for record in records:
        messages = record["messages"]
        # converter.py: even positions user, odd assistant, an even count; else the sample is dropped
        assert len(messages) % 2 == 0
        assert all(m[tags["role_tag"]] == ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(messages))
        # mm_plugin._validate_messages: as many <image> placeholders as images, else a ValueError
        assert sum(m["content"].count("<image>") for m in messages) == len(record["images"]) == 1
        # _find_medias: joined to media_dir, which defaults to dataset_dir
        assert all(os.path.isfile(os.path.join(dest, image)) for image in record["images"])
        assert all(named_attributes(m["content"]) == [] for m in messages)


def test_hf_export_loads_with_datasets_and_carries_a_hub_ready_card(mini_output, tmp_path, capsys):
    import datasets

    dest = tmp_path / "hf"
    assert export(capsys, mini_output, "--to", "hf", dest)[0] == 0
    ds = datasets.load_dataset(str(dest), split="train", cache_dir=str(tmp_path / "cache"))
    rows = accepted(mini_output)
    assert isinstance(ds.features["image"], datasets.Image) and ds.num_rows == len(rows)
    labels = {r["sample_key"]: json.loads(r["attributes"]) for r in rows}
    assert {row["key"]: {a["attribute"]: a["value"] for a in row["attributes"]} for row in ds} == labels
    assert {row["key"]: (row["gender"], row["race"]) for row in ds} == {
        k: (v.get("gender"), v.get("race")) for k, v in labels.items()}
    assert all(isinstance(image, Image.Image) for image in ds["image"])
    front = yaml.safe_load((dest / "README.md").read_text().split("---")[1])
    assert front["license"] == "cc0-1.0" and "synthetic" in front["tags"] and front["size_categories"] == ["n<1K"]
    assert front["task_categories"] and front["configs"][0]["data_files"][0]["path"] == "data/train-*.parquet"


def test_export_selects_by_value_and_joins_weights_by_id(mini_output, tmp_path, capsys):
    rows = [r for r in accepted(mini_output) if json.loads(r["attributes"]).get("gender") == "female"]
    weights = tmp_path / "weights.csv"
    with weights.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["set_id", "member_id", "weight"])
        for index, row in enumerate(accepted(mini_output)):
            writer.writerow([row["set_id"], row["member_id"], 0.5 + index])
    hand = {r["sample_key"]: 0.5 + i for i, r in enumerate(accepted(mini_output))}
    dest = tmp_path / "female"
    code, _, _ = export(capsys, mini_output, "--to", "llava", dest, "--value", "gender=female", "--weights", weights)
    assert code == 0
    records = json.loads((dest / "llava.json").read_text())
    assert sorted(r["id"] for r in records) == sorted(r["sample_key"] for r in rows)
    assert {r["id"]: r["weight"] for r in records} == {r["sample_key"]: hand[r["sample_key"]] for r in rows}


def test_export_refuses_unknown_ids_and_a_used_folder_in_one_line(mini_output, tmp_path, capsys):
    weights = tmp_path / "weights.csv"
    weights.write_text("set_id,member_id,weight\nnope-gender,female,1.0\n")
    code, _, err = export(capsys, mini_output, "--to", "hf", tmp_path / "a", "--weights", weights)
    assert code == 4 and err.count("\n") == 1 and "nope-gender/female" in err and "Traceback" not in err
    rows = accepted(mini_output)
    weights.write_text("set_id,member_id,weight\n" + "".join(
        f"{r['set_id']},{r['member_id']},{'heavy' if i == 0 else 1.0}\n" for i, r in enumerate(rows)))
    code, _, err = export(capsys, mini_output, "--to", "llava", tmp_path / "c", "--weights", weights)
    assert code == 4 and "weight 'heavy'" in err and not (tmp_path / "c").exists()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    code, _, err = export(capsys, mini_output, "--to", "llava", tmp_path / "used")
    assert code == 4 and "not an empty folder" in err
    code, _, err = export(capsys, mini_output, "--to", "llava", tmp_path / "b", "--value", "gender=robot")
    assert code == 4 and "no accepted member matches" in err


def _rename_in_tar(path, old: str, new: str) -> None:
    """Rewrite a tar with members ``old.*`` renamed ``new.*``, as someone crafting an output would."""
    with tarfile.open(path) as tar:
        files = [(m, tar.extractfile(m).read()) for m in tar if m.isfile()]
    with tarfile.open(path, "w") as tar:
        for member, data in files:
            key, dot, extension = member.name.partition(".")
            member.name = (new if key == old else key) + dot + extension
            tar.addfile(member, io.BytesIO(data))


def test_an_export_of_a_crafted_key_writes_nothing_outside_dest(mini_output, tmp_path, capsys):
    out = tmp_path / "crafted"
    shutil.copytree(mini_output, out)
    evil = str(tmp_path / "pwn")  # an absolute path without a dot: pathlib keeps only it of images/ / "KEY.jpg"
    assert os.path.isabs(evil) and "." not in evil
    manifest = sorted((out / "manifest").glob("*.parquet"))[0]
    table = pq.read_table(manifest)
    rows = table.to_pylist()
    row = next(r for r in rows if r["shard"] is not None)
    _rename_in_tar(out / "shards" / row["shard"], row["sample_key"], evil)
    row.update(sample_key=evil, file=f"{evil}.jpg")
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), manifest)
    code, _, err = export(capsys, out, "--to", "llava", tmp_path / "dest")
    assert not (tmp_path / "pwn.jpg").exists() and not (tmp_path / "dest").exists()
    assert code == 3 and err.count("\n") == 1 and f"sample_key {evil!r}" in err and manifest.name in err


def test_a_killed_export_leaves_a_partial_folder_the_next_export_removes(mini_output, tmp_path, capsys):
    dest = tmp_path / "llava"
    marker = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "COUNTERFACTORY_INJECT_FAULTS": f"crash:export:{marker}"}
    killed = subprocess.run([sys.executable, "-m", "pipeline", "export", str(mini_output), "--to", "llava", str(dest)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == 17 and marker.exists(), killed.stderr
    left = list(tmp_path.glob(".llava.partial-*"))
    assert len(left) == 1 and len(list((left[0] / "images").iterdir())) == 1 and not dest.exists()
    code, printed, _ = export(capsys, mini_output, "--to", "llava", dest)
    assert code == 0 and f"removed {left[0]}" in printed
    assert not list(tmp_path.glob(".llava.partial-*"))
    assert len(json.loads((dest / "llava.json").read_text())) == len(accepted(mini_output))


def test_a_symlinked_dest_is_refused_before_any_work(mini_output, tmp_path, capsys):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    code, _, err = export(capsys, mini_output, "--to", "hf", tmp_path / "link")
    assert code == 4 and err.count("\n") == 1 and "symbolic link" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"] and not list((tmp_path / "real").iterdir())
