"""Config loading: defaults, environment overrides, and one clear error per mistake."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsq_sync import config
from lsq_sync.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_loads_and_documents_every_key() -> None:
    text = (ROOT / "config.example.toml").read_text()
    cfg = config.from_mapping(tomllib.loads(text), env={})
    assert cfg.lsq.rate_limit_calls == 25
    data = tomllib.loads(text)
    for section, (_, checks) in config.SCHEMA.items():
        assert set(data[section]) == set(checks), f"[{section}] keys differ from the schema"


def test_defaults_match_the_interface() -> None:
    cfg = config.from_mapping({}, env={})
    assert cfg.lsq.base_url == "https://api.leadsquared.com"
    assert cfg.lsq.auth == "header"
    assert (cfg.lsq.rate_limit_calls, cfg.lsq.rate_limit_period_s) == (25, 5.0)
    assert (cfg.lsq.timeout_s, cfg.lsq.max_attempts) == (30.0, 5)
    assert cfg.database.url == "sqlite:///lsq_sync.db"
    assert cfg.leads.query == "SELECT lead_id FROM leads"
    assert cfg.leads_url == cfg.database.url
    assert (cfg.push.notify_by, cfg.push.max_edit_attempts) == ("1000", 10)
    assert (cfg.log.format, cfg.log.level) == ("auto", "info")


def test_environment_wins_over_the_file() -> None:
    data = {"lsq": {"access_key": "file-a", "secret_key": "file-s"},
            "database": {"url": "sqlite:///file.db"}}
    env = {"LSQ_ACCESS_KEY": "u$env-a", "LSQ_SECRET_KEY": "env-s",
           "LSQ_SYNC_DATABASE_URL": "sqlite:///env.db"}
    cfg = config.from_mapping(data, env=env)
    assert cfg.lsq.access_key.reveal() == "u$env-a"
    assert cfg.lsq.secret_key.reveal() == "env-s"
    assert cfg.database.url == "sqlite:///env.db"


def test_secrets_do_not_show_in_repr() -> None:
    cfg = config.from_mapping({"lsq": {"access_key": "u$topsecret", "secret_key": "hush"}},
                              env={})
    assert "topsecret" not in repr(cfg) and "hush" not in repr(cfg)
    assert "topsecret" not in str(cfg.lsq.access_key)


@pytest.mark.parametrize(("data", "needle"), [
    ({"lsq": {"rate_limit_call": 5}}, "[lsq].rate_limit_call"),
    ({"lsqq": {}}, "[lsqq]"),
    ({"lsq": {"rate_limit_calls": "25"}}, "[lsq].rate_limit_calls must be a whole number"),
    ({"lsq": {"rate_limit_calls": 0}}, "[lsq].rate_limit_calls must be between 1 and"),
    ({"lsq": {"rate_limit_calls": True}}, "[lsq].rate_limit_calls"),
    ({"lsq": {"rate_limit_period_s": 0}}, "[lsq].rate_limit_period_s"),
    ({"lsq": {"auth": "cookie"}}, "[lsq].auth must be one of header, query"),
    ({"lsq": {"base_url": "api.leadsquared.com"}}, "[lsq].base_url"),
    ({"lsq": {"timeout_s": "30"}}, "[lsq].timeout_s must be a number"),
    ({"database": {"url": "not a url"}}, "[database].url"),
    ({"leads": {"query": "  "}}, "[leads].query"),
    ({"push": {"notify_by": "1111"}}, "[push].notify_by"),
    ({"log": {"format": "xml"}}, "[log].format"),
    ({"log": "info"}, "[log] must be a table"),
])
def test_bad_values_name_the_key(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.from_mapping(data, env={})
    assert needle in str(err.value)


def test_missing_credentials_are_named_when_needed() -> None:
    cfg = config.from_mapping({}, env={})
    with pytest.raises(ConfigError, match=r"\[lsq\]\.access_key is required.*LSQ_ACCESS_KEY"):
        cfg.lsq.require_credentials()


def test_base_url_is_normalised() -> None:
    cfg = config.from_mapping({"lsq": {"base_url": "https://api-in21.leadsquared.com/v2/"}},
                              env={})
    assert cfg.lsq.base_url == "https://api-in21.leadsquared.com"


def test_file_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert config.resolve_path(None, env={}) is None
    with pytest.raises(ConfigError, match="does not exist"):
        config.resolve_path("nope.toml", env={})
    with pytest.raises(ConfigError, match="LSQ_SYNC_CONFIG"):
        config.resolve_path(None, env={"LSQ_SYNC_CONFIG": "missing.toml"})
    (tmp_path / "lsq_sync.toml").write_text('[lsq]\nrate_limit_calls = 7\n')
    assert config.load(None, env={}).lsq.rate_limit_calls == 7
    (tmp_path / "other.toml").write_text('[lsq]\nrate_limit_calls = 9\n')
    assert config.load(None, env={"LSQ_SYNC_CONFIG": "other.toml"}).lsq.rate_limit_calls == 9
    assert config.load("lsq_sync.toml", env={"LSQ_SYNC_CONFIG": "other.toml"}) \
        .lsq.rate_limit_calls == 7


def test_invalid_toml_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[lsq\nbase_url = 1")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        config.load(str(path), env={})


toml_scalars = st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
                         st.booleans(), st.lists(st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(
    st.sampled_from([*config.SCHEMA, "other"]),
    st.one_of(toml_scalars, st.dictionaries(
        st.sampled_from([k for _, checks in config.SCHEMA.values() for k in checks] + ["x"]),
        toml_scalars, max_size=4)),
    max_size=4))
def test_any_mapping_gives_a_config_or_a_config_error(data: dict[str, object]) -> None:
    try:
        config.from_mapping(data, env={})
    except ConfigError as exc:
        assert str(exc)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.builds(
    lambda section, key, value: f"[{section}]\n{key} = {value}\n",
    st.sampled_from([*config.SCHEMA, "x"]),
    st.sampled_from([k for _, checks in config.SCHEMA.values() for k in checks] + ["y"]),
    st.sampled_from(["1", "-1", "0", "1.5", "true", '"text"', "[1, 2]", "{a = 1}", '""',
                     "1979-05-27T07:32:00Z", "nan", "inf", '"sqlite:///x.db"'])))
def test_any_toml_text_is_a_config_or_one_clear_error(tmp_path_factory: pytest.TempPathFactory,
                                                      text: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "c.toml"
    path.write_text(text, encoding="utf-8")
    try:
        config.load(str(path), env={})
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)  # one line


def test_to_toml_writes_what_load_reads(tmp_path: Path) -> None:
    from lsq_sync.config import load, to_toml
    odd = 'C:\\data\\tasks "x".db'
    path = tmp_path / "c.toml"
    path.write_text(to_toml({"lsq": {"base_url": "http://127.0.0.1:9", "access_key": "u$ab",
                                     "secret_key": "s3cr3t", "rate_limit_calls": 7,
                                     "shared_budget": False, "timeout_s": 2.5},
                             "database": {"url": f"sqlite:///{odd}"}}))
    cfg = load(str(path), env={})
    assert cfg.database.url == f"sqlite:///{odd}"
    assert (cfg.lsq.rate_limit_calls, cfg.lsq.shared_budget, cfg.lsq.timeout_s) == (7, False, 2.5)
    assert cfg.lsq.access_key.reveal() == "u$ab"


def test_a_written_config_reads_back_whatever_its_values_hold() -> None:
    import tomllib
    odd = ['sqlite:///d\U0001F600/x.db', 'a "quote" and \\ a backslash', "tab\there",
           "line\nbreak", "\u202e", ""]
    for value in odd:
        text = config.to_toml({"database": {"url": value}, "lsq": {"timeout_s": 2.5,
                                                                   "shared_budget": False}})
        assert tomllib.loads(text) == {"database": {"url": value},
                                       "lsq": {"timeout_s": 2.5, "shared_budget": False}}


def test_every_key_can_be_set_from_the_environment_and_wins_over_the_file() -> None:
    from dataclasses import fields

    example = config.from_mapping({}, env={})
    for name in config.SCHEMA:
        for f in fields(getattr(example, name)):
            var = config.env_name(name, f.name)
            assert var == f"LSQ_SYNC__{name.upper()}__{f.name.upper()}"
            value = getattr(getattr(example, name), f.name)
            if isinstance(value, bool):  # the other value, so that the change shows
                text, expected = ("false", False) if value else ("true", True)
            else:
                text = str(value.reveal() if isinstance(value, config.Secret) else value)
                expected = value
            got = config.from_mapping({}, env={var: text})
            assert getattr(getattr(got, name), f.name) == expected, var
            assert got.origins[f"{name}.{f.name}"] == f"environment (${var})"
    cfg = config.from_mapping({"lsq": {"timeout_s": 5, "max_attempts": 3}},
                              env={"LSQ_SYNC__LSQ__TIMEOUT_S": "12.5",
                                   "LSQ_SYNC__STORE__HISTORY": "true",
                                   "LSQ_SYNC__PUSH__NOTIFY_BY": "1100",
                                   "LSQ_SECRET_KEY": "older-style-secret"})
    assert (cfg.lsq.timeout_s, cfg.lsq.max_attempts, cfg.store.history) == (12.5, 3, True)
    assert cfg.push.notify_by == "1100" and cfg.lsq.secret_key.reveal() == "older-style-secret"
    assert cfg.origins["lsq.max_attempts"] == "file" and "lsq.auth" not in cfg.origins


@pytest.mark.parametrize(("env", "message"), [
    ({"LSQ_SYNC__LSQ__TIMEOUTS": "1"}, "$LSQ_SYNC__LSQ__TIMEOUTS names no config key"),
    ({"LSQ_SYNC__LSQ__TIMEOUT_S": "soon"}, "[lsq].timeout_s must be a number"),
    ({"LSQ_SYNC__STORE__HISTORY": "maybe"}, "[store].history"),
])
def test_a_bad_environment_value_names_its_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.from_mapping({}, env=env)
    assert message in str(caught.value)
