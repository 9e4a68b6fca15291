"""params.yaml ↔ config.py: typos refused by name, defaults that agree, cross-field checks."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import yaml

from gifqa_model.core import config
from gifqa_model.core.config import (
    Params,
    TrainParams,
    apply_overrides,
    flatten,
    load_params,
    parse_override,
)

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, body: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_params_yaml_states_the_code_defaults() -> None:
    """config.py holds the defaults and params.yaml states each one: the two agree, but for
    the pins of the project's own files (the foundation), which no library default can name."""
    written = flatten(load_params(REPO / "params.yaml").model_dump())
    defaults = flatten(Params().model_dump())
    assert written.keys() == defaults.keys()
    differ = {k for k in written if written[k] != defaults[k]}
    assert differ <= set(config.PROJECT_PINS), differ - set(config.PROJECT_PINS)


def test_params_yaml_loads_the_foundation_it_pins() -> None:
    """The retrain's CLIP, Q-Former, LM and tokenizer are the foundation's, by its paths."""
    from gifqa_model.model.foundation import foundation_paths

    written = flatten(load_params(REPO / "params.yaml").model_dump())
    for key, path in foundation_paths(written["foundation.dir"]).items():
        assert written[key] == path, key


def test_a_foundation_seed_taken_by_training_or_a_benchmark_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="foundation.seed"):
        Params.model_validate({"foundation": {"seed": 1000}})
    with pytest.raises(pydantic.ValidationError, match="foundation.seed"):
        Params.model_validate({"foundation": {"seed": 2001}})


def test_pin_foundation_rewrites_only_its_digest(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text()
    path.write_text(text)
    config.pin_foundation(path, "ab" * 32)
    assert load_params(path).foundation.digest == "ab" * 32
    changed = [
        (a, b)
        for a, b in zip(text.splitlines(), path.read_text().splitlines(), strict=True)
        if a != b
    ]
    assert len(changed) == 1 and changed[0][1].lstrip().startswith("digest: " + "ab" * 32)


def test_params_yaml_states_every_key_so_dvc_tracks_it() -> None:
    written = flatten(yaml.safe_load((REPO / "params.yaml").read_text()))
    defaults = flatten(Params().model_dump(by_alias=True))
    # list-valued keys (ingest.sources) flatten to one entry either way
    assert sorted(defaults) == sorted(written)


@pytest.mark.parametrize(
    "body, names",
    [
        ({"train": {"max_stpes": 5}}, ["train", "max_stpes"]),
        ({"train": {"model": {"lm_hiden": 64}}}, ["train", "model", "lm_hiden"]),
        ({"train": {"mvm": {"wieght": 1.0}}}, ["train", "mvm", "wieght"]),
        ({"clip": {"fit_step": 10}}, ["clip", "fit_step"]),
        ({"ingest": {"limits": {"max_byte": 1}}}, ["ingest", "limits", "max_byte"]),
        ({"registry": {"name": "x"}}, ["registry", "name"]),
        ({"evalute": {}}, ["evalute"]),
    ],
)
def test_a_typo_fails_with_its_key_and_section(
    tmp_path: Path, body: dict, names: list[str]
) -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        load_params(_write(tmp_path, body))
    text = str(err.value)
    assert "Extra inputs are not permitted" in text
    assert ".".join(names) in text


def test_every_params_model_refuses_unknown_keys() -> None:
    models = [
        v
        for v in vars(config).values()
        if isinstance(v, type)
        and issubclass(v, pydantic.BaseModel)
        and v.__module__ == config.__name__
    ]
    assert len(models) >= 12
    for model in models:
        assert model.model_config.get("extra") == "forbid", model.__name__


def test_typed_sections_take_their_values() -> None:
    p = TrainParams.model_validate({"model": {"lm_layers": 3}, "mvm": {"weight": 0.5}})
    assert p.model.lm_layers == 3 and p.mvm.weight == 0.5
    assert p.model.qformer_hidden == config.ModelParams().qformer_hidden  # the rest defaults


@pytest.mark.parametrize(
    "train, message",
    [
        ({"scene_weight": 1, "scene_labels": ["motion"], "model": {"motion_gap": 0}}, "motion_gap"),
        ({"scene_weight": 1, "scene_labels": ["position"], "time_reversal": 0.5}, "time_reversal"),
        ({"scene_labels": ["colour"]}, "scene_labels"),
        ({"mvm": {"ratio_min": 0.8, "ratio_max": 0.2}}, "ratio_min"),
        ({"model": {"profile": "full"}}, "qformer_dir"),
    ],
)
def test_cross_field_checks_fail_at_load(train: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        TrainParams.model_validate(train)


def test_cross_field_checks_in_other_sections(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match="val_share"):
        load_params(_write(tmp_path, {"ingest": {"val_share": 0.6, "test_share": 0.6}}))
    with pytest.raises(pydantic.ValidationError, match="max_objects"):
        load_params(_write(tmp_path, {"shapes": {"max_groups": 3, "max_objects": 2}}))


def test_overrides_parse_yaml_and_merge_dotted_keys() -> None:
    assert parse_override("train.model.motion_gap=3") == ("train.model.motion_gap", 3)
    assert parse_override("lr=0.001") == ("lr", 0.001)
    with pytest.raises(ValueError, match="key=value"):
        parse_override("no-equals-sign")
    base = {"train": {"lr": 1.0, "model": {"a": 1, "b": 2}}}
    out = apply_overrides(base, {"train.model.a": 5, "train": {"lr": 2.0}})
    assert out == {"train": {"lr": 2.0, "model": {"a": 5, "b": 2}}}
    assert base["train"]["model"]["a"] == 1  # the input is left alone
    replaced = apply_overrides(base, {"train": {"model": {"c": 3}}}, {("train", "model")})
    assert replaced["train"]["model"] == {"c": 3}


def test_flatten_joins_nested_keys() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": "x"}}, "e": [1]}) == {"a.b": 1, "a.c.d": "x", "e": [1]}


def test_overlapping_thread_pins_give_the_count_back() -> None:
    """Threads embedding at once each pin torch to one thread; once all have left, the
    process has its own count again (saving and restoring per block left it at 1)."""
    import threading

    import torch

    from gifqa_model.core.threads import torch_threads

    before, inside, gate = torch.get_num_threads(), [], threading.Barrier(4)

    def embed() -> None:
        with torch_threads(1):
            gate.wait(timeout=30)  # all four inside at once
            inside.append(torch.get_num_threads())
            gate.wait(timeout=30)

    workers = [threading.Thread(target=embed) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert inside == [1, 1, 1, 1] and torch.get_num_threads() == before
    with torch_threads(1), pytest.raises(RuntimeError, match="held at 1"):
        with torch_threads(2):
            pass
    assert torch.get_num_threads() == before
