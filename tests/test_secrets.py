"""Keys never reach a log line, an error, a stored row, or the database file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from click.testing import CliRunner
from sqlalchemy import MetaData, select

from lsq_sync import logs
from lsq_sync.cli import cli
from lsq_sync.store import db
from lsq_sync.testing import Faults

from .helpers import fill_leads_table

ACCESS = "u$sEcReT-access-0123456789abcdef"
SECRET = "sEcReT-secret-fedcba9876543210"
WRONG = "wR0ng-secret-value-55555"


def forms(*keys: str) -> list[str]:
    found = []
    for key in keys:
        found += [key, quote(key, safe=""), quote_plus(key), key.split("$")[-1]]
    return found


@pytest.mark.parametrize("auth", ["header", "query"])
def test_no_key_anywhere_after_runs_that_go_wrong(auth: str, tmp_path: Path,
                                                  make_sim: object) -> None:
    sim = make_sim(leads=30, access_key=ACCESS, secret_key=SECRET,  # type: ignore[operator]
                   faults=Faults(bare_500=0.2, malformed=0.1, mx_error_every=7,
                                 echo_request=True))
    url = f"sqlite:///{tmp_path / 't.db'}"
    fill_leads_table(url, sim.state.lead_ids())

    def config(secret: str) -> Path:
        path = tmp_path / f"{secret[:5]}.toml"
        path.write_text(
            f'[lsq]\nbase_url = "{sim.url}"\nauth = "{auth}"\nretry_backoff_s = 0.01\n'
            f'rate_limit_calls = 1000\nrate_limit_period_s = 1\nmax_attempts = 10\n'
            f'[database]\nurl = "{url}"\n[log]\nformat = "json"\nlevel = "debug"\n')
        return path

    runner = CliRunner()
    outputs = []
    env = {"LSQ_ACCESS_KEY": ACCESS, "LSQ_SECRET_KEY": SECRET}
    outputs.append(runner.invoke(cli, ["--config", str(config(SECRET)), "db", "upgrade"],
                                 env=env).output)
    result = runner.invoke(cli, ["--config", str(config(SECRET)), "pull"], env=env)
    assert result.exit_code == 1  # the MX leads failed; the rest went through retries
    outputs.append(result.output)
    bad = runner.invoke(cli, ["--config", str(config(WRONG)), "pull"],
                        env={"LSQ_ACCESS_KEY": ACCESS, "LSQ_SECRET_KEY": WRONG})
    assert bad.exit_code == 3
    outputs.append(bad.output)
    outputs.append(runner.invoke(cli, ["--config", str(config(SECRET)), "runs"]).output)
    text = "\n".join(outputs)
    assert '"retry"' in text and '"lead_failed"' in text  # the noisy paths did run

    engine = db.make_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                text += "\n" + json.dumps([str(v) for v in row])
    engine.dispose()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("t.db*"))
    for form in forms(ACCESS, SECRET, WRONG):
        assert form not in text, f"{form!r} leaked"
        assert form.encode() not in stored, f"{form!r} is in the database file"


def test_the_redactor_catches_urls_from_libraries(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("json", "info", secrets=[ACCESS, SECRET])
    logging.getLogger("httpx").warning(
        "HTTP Request: GET https://api/x?accessKey=%s&secretKey=%s", quote_plus(ACCESS), SECRET)
    logs.get_logger("t").warning("oops", detail={"nested": [ACCESS]})
    err = capsys.readouterr().err
    assert "HTTP Request" in err and "oops" in err
    for form in forms(ACCESS, SECRET):
        assert form not in err


@pytest.mark.parametrize("key", ["u$abc\ndef-secret-line-break", "u$abc\tdef-secret-tab",
                                 "u$abcdéf-secret-accent", "u$abc\x00def-secret-nul"])
@pytest.mark.parametrize("where", ["file", "env"])
def test_a_key_with_control_or_non_ascii_characters_is_exit_2_without_its_value(
        key: str, where: str, tmp_path: Path) -> None:
    if where == "env" and "\x00" in key:
        pytest.skip("an environment variable cannot hold a NUL")
    path = tmp_path / "c.toml"
    db_url = f"sqlite:///{tmp_path / 't.db'}"
    line = f"access_key = {json.dumps(key)}\n" if where == "file" else ""
    path.write_text(f'[lsq]\n{line}secret_key = "s"\n[database]\nurl = "{db_url}"\n')
    env = {"LSQ_ACCESS_KEY": key if where == "env" else "", "LSQ_SECRET_KEY": ""}
    runner = CliRunner()
    for args in (["pull"], ["doctor"], ["runs"]):
        result = runner.invoke(cli, ["--config", str(path), *args], env=env)
        assert result.exit_code == 2, result.output
        assert "[lsq].access_key holds a control character" in result.output
        for form in (key, repr(key)[1:-1], json.dumps(key)[1:-1], "abc", "secret"):
            assert form not in result.output


@pytest.mark.parametrize("url", [
    "postgresql://lsq:Hunter2-db-secret@127.0.0.1:1/lsq",
    "postgresql://lsq@127.0.0.1:1/lsq?password=Hunter2-db-secret",
    "mysql://lsq:Hunter2-db-secret@127.0.0.1:1/lsq",
])
def test_database_passwords_never_show(url: str, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[database]\nurl = "{url}"\n[leads]\nurl = "{url}"\n')
    runner = CliRunner()
    outputs = []
    for args in (["db", "upgrade"], ["db", "current"], ["db", "check"], ["doctor"], ["pull"],
                 ["runs"], ["status"]):
        for fmt in ("json", "console"):
            result = runner.invoke(cli, ["--config", str(path), "--log-format", fmt, *args],
                                   env={"LSQ_ACCESS_KEY": ACCESS, "LSQ_SECRET_KEY": SECRET})
            assert result.exit_code in (2, 3), (args, result.output)
            outputs.append(result.output)
    text = "\n".join(outputs)
    # Without the driver (a plain `pip install -e '.[test]'`) the error names the extra.
    assert "cannot connect to the database" in text or "no driver for" in text
    assert "Hunter2" not in text


def test_every_escaped_form_of_a_key_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    key = 'u$we"ird\\key-0123'
    logs.configure("json", "info", secrets=[key])
    logs.get_logger("t").warning("quoted", as_repr=repr(key), as_json=json.dumps(key),
                                 in_text=f"value {key!r} in a message")
    err = capsys.readouterr().err
    assert "quoted" in err
    for form in (key, repr(key)[1:-1], json.dumps(key)[1:-1], "we\\\"ird", "we\"ird"):
        assert form not in err, form
