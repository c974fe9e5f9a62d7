import pytest

from fusionrec.config import load_settings
from fusionrec.errors import ConfigError

pytestmark = pytest.mark.unit


def write(tmp_path, text):
    p = tmp_path / "settings.yaml"
    p.write_text(text)
    return p


def test_defaults_without_a_file_are_the_local_profile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings(env={})
    assert s.profile == "local" and s.paths.artifacts == "artifacts"


def test_profile_overrides_default_and_env_overrides_profile(tmp_path):
    p = write(tmp_path, "default:\n  paths: {artifacts: a}\nprofiles:\n  cluster:\n    paths: {artifacts: /mnt/x}\n")
    assert load_settings(p, env={}).paths.artifacts == "a"
    assert load_settings(p, "cluster", env={}).paths.artifacts == "/mnt/x"
    env = {
        "FUSIONREC_PROFILE": "cluster",
        "FUSIONREC__PATHS__ARTIFACTS": "/data",
        "FUSIONREC__VALIDATION__MAX_TEXT_CHARS": "42",
    }
    s = load_settings(p, env=env)
    assert (s.profile, s.paths.artifacts, s.validation.max_text_chars) == ("cluster", "/data", 42)


def test_repository_settings_file_loads_both_profiles():
    from tests.conftest import REPO

    for profile in ("local", "cluster"):
        assert load_settings(REPO / "configs" / "settings.yaml", profile, env={}).profile == profile


def test_unknown_key_is_named(tmp_path):
    p = write(tmp_path, "default:\n  validation: {max_txt_chars: 5}\nprofiles: {}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'validation.max_txt_chars'"):
        load_settings(p, env={})


def test_bad_env_value_is_named(tmp_path):
    p = write(tmp_path, "default: {}\nprofiles: {}\n")
    with pytest.raises(ConfigError, match=r"validation.max_text_chars"):
        load_settings(p, env={"FUSIONREC__VALIDATION__MAX_TEXT_CHARS": "many"})


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = write(tmp_path, "default:\n  paths: [unclosed\nprofiles: {}\n")
    with pytest.raises(ConfigError, match=rf"{p}: malformed YAML at line \d+"):
        load_settings(p, env={})


def test_unknown_profile(tmp_path):
    p = write(tmp_path, "default: {}\nprofiles: {local: {}}\n")
    with pytest.raises(ConfigError, match="unknown profile 'staging'"):
        load_settings(p, "staging", env={})


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.yaml", env={})


@pytest.mark.parametrize("raw", ["a: b", "123456", "s3cr3t #x", "null", "[1, 2]", "  spaced  "])
def test_a_secret_in_the_environment_is_taken_as_written(raw):
    """Secrets used to be YAML-parsed: 'a: b' became a mapping (echoed in the error), '123456' a number,
    's3cr3t #x' was cut at the comment and 'null' disabled the key."""
    settings = load_settings(env={"FUSIONREC__MONITORING__LOG_KEY": raw})
    assert settings.monitoring.log_key.get_secret_value() == raw


def test_a_bad_secret_is_never_shown_in_the_error():
    with pytest.raises(ConfigError) as e:
        load_settings(env={"FUSIONREC__MONITORING__LOG_KEY__PART": "topsecretvalue"})
    assert "topsecretvalue" not in str(e.value) and "secret, not shown" in str(e.value)
    assert "topsecretvalue" not in repr(load_settings(env={"FUSIONREC__MONITORING__LOG_KEY": "topsecretvalue"}))


def test_set_options_are_read_like_the_environment():
    """--set goes through the same parser as FUSIONREC__ variables: YAML values, nested keys, secrets as written."""
    from fusionrec.config import _env_overrides, set_overrides

    sets = ["validation.max_text_chars=42", "encoders.text.checkpoint=s3://m/minilm", "monitoring.log_key=123456"]
    tree = set_overrides(sets)
    assert tree["validation"]["max_text_chars"] == 42 and tree["encoders"]["text"]["checkpoint"] == "s3://m/minilm"
    assert tree["monitoring"]["log_key"] == "123456"  # a secret: not YAML-parsed into a number
    s = load_settings(env={}, overrides=tree)
    assert s.validation.max_text_chars == 42 and s.monitoring.log_key.get_secret_value() == "123456"
    assert set_overrides(sets) == _env_overrides(
        {"FUSIONREC__" + k.split("=")[0].upper().replace(".", "__"): k.split("=", 1)[1] for k in sets}
    )
    for bad in ("no-equals-sign", "=value"):
        with pytest.raises(ConfigError, match="expected KEY=VALUE"):
            set_overrides([bad])
    with pytest.raises(ConfigError, match="not valid YAML"):
        set_overrides(["validation.max_text_chars=[1, 2"])


def test_workers_default_to_one_per_core_on_the_collocated_server_and_one_on_each_hop(monkeypatch):
    import os

    from fusionrec.api import workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    auto = load_settings(env={})
    assert auto.serving.workers == 0
    assert workers.count(auto, collocated=True) == 3 and workers.count(auto, collocated=False) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert workers.count(auto, collocated=True) == workers.AUTO_MAX
    pinned = load_settings(env={"FUSIONREC__SERVING__WORKERS": "2"})
    assert workers.count(pinned, collocated=True) == 2 and workers.count(pinned, collocated=False) == 2
