"""`ortserve serve --help` is built from `ServerSettings`: every field is a flag with its description, env var and
default, so a setting added to the class cannot be missing from the CLI or its help."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ortserve.cli.serve import build_parser
from ortserve.server.settings import ServerSettings


@pytest.fixture(scope="module")
def help_text() -> str:
    run = subprocess.run(
        [sys.executable, "-m", "ortserve.cli.main", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "10000"},
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.mark.parametrize("name", [n for n in ServerSettings.model_fields if n != "models"])
def test_every_setting_has_a_described_flag_with_env_and_default(help_text: str, name: str) -> None:
    field = ServerSettings.model_fields[name]
    assert field.description, f"ServerSettings.{name} has no docstring"
    flag = "--" + name.replace("_", "-")
    (action,) = [a for a in build_parser()._actions if flag in a.option_strings]
    assert action.help is not None
    assert " ".join(field.description.split()[:4]) in action.help, f"{flag} help lacks its description"
    assert f"env ORTSERVE_{name.upper()}" in action.help and "default " in action.help
    # and what argparse prints: the flag, then its env var before the next flag starts
    after_flag = help_text.split(f"  {flag}", 1)[1]
    assert f"env ORTSERVE_{name.upper()}" in " ".join(after_flag.split("\n  --", 1)[0].split())


def test_model_flag_is_repeatable_and_named_after_the_contract(help_text: str) -> None:
    assert "--model NAME=URI" in help_text and "ORTSERVE_MODELS" in help_text
    args = build_parser().parse_args(["--model", "a=models:/a@production", "--model", "b=/tmp/b", "--port", "0"])
    settings = ServerSettings(**{k: v for k, v in vars(args).items() if v is not None})
    assert [(m.name, m.uri) for m in settings.models] == [("a", "models:/a@production"), ("b", "/tmp/b")]
    assert settings.port == 0


def test_invalid_flag_value_names_the_setting() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "ortserve.cli.main", "serve", "--model", "a=b", "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "invalid port" in run.stderr and "Traceback" not in run.stderr
