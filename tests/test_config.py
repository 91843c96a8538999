import json

import pytest

from openset.config import Config, ConfigError, parse_overrides

from .conftest import REPO


def test_shipped_config_is_the_default():
    assert Config.from_json(REPO / "configs" / "mnist-0to4.json") == Config()


def test_round_trip_through_json(tmp_path):
    cfg = Config().override(model={"hidden": [64, 32], "activation": "tanh"}, seed=7)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert Config.from_json(path) == cfg
    assert Config.from_json(path).model.hidden == (64, 32)


def test_config_is_frozen():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Config().seed = 3


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{not json", "not valid JSON"),
        ('{"optim": {"name": "lbfgs"}}', "optim.name"),
        ('{"model": {"hidden": [64], "depth": 3}}', "model.depth"),
        ('{"data": {"known_classes": [1, 1]}}', "known_classes"),
        ('{"negatives": {"source": "auxiliary:cifar"}}', "negatives.source"),
        ('{"optim": {"epochs": 0}}', "optim.epochs"),
    ],
)
def test_bad_config_gives_one_line_error(tmp_path, content, fragment):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        Config.from_json(path)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Config.from_json(tmp_path / "nope.json")


def test_zero_hidden_layers_is_allowed():
    assert Config().override(model={"hidden": []}).model.hidden == ()


def test_pydantic_errors_read_as_one_line_without_the_body_step():
    from openset.config import problems

    errors = [{"loc": ("body", "image", 0), "msg": "not a number"}, {"loc": (), "msg": "too short"}]
    assert problems(errors) == "image.0: not a number; too short"
    assert problems(errors * 4, limit=3).count(";") == 2


@pytest.mark.parametrize("pair, expected", [
    ("optim.epochs=5", {"optim": {"epochs": 5}}),
    ("augment.scale=[0.7, 1.1]", {"augment": {"scale": [0.7, 1.1]}}),
    ("negatives.source=none", {"negatives": {"source": "none"}}),
    ("seed=1", {"seed": 1}),  # a top-level field
])
def test_overrides_parse_as_json_or_text(pair, expected):
    assert parse_overrides([pair]) == expected
    assert Config().override(**parse_overrides([pair]))  # and the config takes them


def test_a_config_extends_another_section_by_section(tmp_path):
    """``extends`` takes the named file beside it, with the config's own fields on top, section by section; a loop
    is a one-line error."""
    (tmp_path / "base.json").write_text(json.dumps({"name": "base", "optim": {"epochs": 7, "lr": 0.01}}))
    (tmp_path / "child.json").write_text(json.dumps({"extends": "base.json", "optim": {"epochs": 1}}))
    child = Config.from_json(tmp_path / "child.json")
    assert child.name == "base" and child.optim.epochs == 1 and child.optim.lr == 0.01
    (tmp_path / "loop.json").write_text(json.dumps({"extends": "loop.json"}))
    with pytest.raises(ConfigError, match="extends itself"):
        Config.from_json(tmp_path / "loop.json")
