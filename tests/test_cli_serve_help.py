"""`ortserve serve --help` is built from `ServerSettings`: every field is a flag with its description, env var and
default, so a setting added to the class cannot be missing from the CLI or its help."""

from __future__ import annotations

import os
import re
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


def test_help_is_grouped_by_topic_with_every_setting_in_a_section(help_text: str) -> None:
    from ortserve.cli.serve import HELP_GROUPS, OTHER_GROUP

    sections = [line.rstrip(":") for line in help_text.splitlines() if line and not line[0].isspace()]
    assert [s for s in sections if s in HELP_GROUPS] == list(HELP_GROUPS)
    assert OTHER_GROUP not in sections, "a setting has no --help section: add it to HELP_GROUPS in cli/serve.py"
    grouped = [name for names in HELP_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(ServerSettings.model_fields)
    # a flag sits under its own section
    tls_section = help_text.split("\nnetwork, TLS and authentication:", 1)[1].split("\n\n", 1)[0]
    assert "--tls-key-file" in tls_section and "--max-batch-size" not in tls_section


def test_help_texts_name_flags_not_fields_and_give_one_default() -> None:
    field_names = [name for name in ServerSettings.model_fields if "_" in name]
    for action in build_parser()._actions:
        if not action.help or action.dest in ("help", "models"):  # --model's per-model keys are field names
            continue
        for name in field_names:
            assert re.search(rf"(?<![\w-]){name}(?![\w-])", action.help) is None, (action.option_strings, name)
        if action.dest != "models":
            assert action.help.count("default") == 1, action.option_strings
    cache_dir = next(a for a in build_parser()._actions if "--cache-dir" in a.option_strings)
    assert cache_dir.help is not None and cache_dir.help.endswith("default ~/.cache/ortserve]")
