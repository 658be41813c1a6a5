"""The run configuration rejects every mistake with one line naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedledger.errors import ConfigError
from fedledger.sim.config import load_config
from fedledger.sim.templates import EXAMPLE_CONFIG, demo_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fedledger.toml"
    path.write_text(text)
    return path


def test_example_config_is_valid(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE_CONFIG))
    assert len(config.members) == 4
    assert config.min_updates == 3
    assert [m.name for m in config.admins] == ["hospital-a", "hospital-b", "hospital-c"]


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE_CONFIG.replace("epochs = 2", "epochs = 2\nepoch = 3"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "training.epoch: unknown key" in str(err.value)


def test_wrong_type_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE_CONFIG.replace("lr = 0.05", 'lr = "fast"'))
    with pytest.raises(ConfigError, match=r"training\.lr"):
        load_config(path)


def test_member_field_error_names_the_member(tmp_path: Path) -> None:
    text = EXAMPLE_CONFIG.replace('roles = ["trainer", "validator"]', 'roles = ["trainer", "oracle"]')
    with pytest.raises(ConfigError, match=r"members\[3\] \('hospital-d'\)\.roles"):
        load_config(write(tmp_path, text))


def test_quorum_above_committee_is_rejected(tmp_path: Path) -> None:
    text = EXAMPLE_CONFIG.replace("quorum = 2", "quorum = 4")
    with pytest.raises(ConfigError, match=r"quorum 4 exceeds protocol\.committee_size 3"):
        load_config(write(tmp_path, text))


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[task\nrounds = 3"))


def test_demo_config_scales_members() -> None:
    config = demo_config(rounds=2, members=6)
    assert len(config.members) == 6
    assert config.protocol.quorum <= config.protocol.committee_size
    assert len({m.name for m in config.members}) == 6
