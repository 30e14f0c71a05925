"""One source for the contract: the error tree and Settings generate the OpenAPI entries and the
docs' tables, and the committed docs are what the generator writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from musetalk_server.api import create_app
from musetalk_server.config import Settings
from musetalk_server.docs_tables import error_table, replace_between_markers, settings_table, update_docs
from musetalk_server.errors import documented_errors

REPO = Path(__file__).resolve().parents[2]


def _openapi(tmp_path) -> dict:
    return create_app(Settings(_env_file=None, result_dir=tmp_path / "results", engine="lite")).openapi()


def test_the_committed_tables_are_the_generated_ones():
    assert update_docs(REPO, check=True) == [], "run: python scripts/docs_tables.py"


def test_the_script_checks_and_says_what_is_stale(tmp_path):
    for doc in ("docs/errors.md", "docs/configuration.md"):
        (tmp_path / doc).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / doc).write_text((REPO / doc).read_text())
    stale = tmp_path / "docs/configuration.md"
    stale.write_text(stale.read_text().replace("| `MUSETALK_PORT` | `8000`", "| `MUSETALK_PORT` | `8001`"))
    assert update_docs(tmp_path, check=True) == ["docs/configuration.md#configuration"]
    assert "`8001`" in stale.read_text()  # --check writes nothing
    assert update_docs(tmp_path) == ["docs/configuration.md#configuration"]
    assert update_docs(tmp_path, check=True) == []
    script = subprocess.run([sys.executable, str(REPO / "scripts/docs_tables.py"), "--check"], cwd=REPO,
                            capture_output=True, text=True, env={"PYTHONPATH": str(REPO / "service")})
    assert script.returncode == 0, script.stdout + script.stderr


# A class added to errors.py, as a contributor would add one: defined in the tree before the
# routes are imported. In a fresh interpreter, so the other tests see the real tree.
_ADD_AN_ERROR = """
import json
from musetalk_server import errors

class VoiceTooQuiet(errors.MuseTalkError):
    status, code = 451, "voice_too_quiet"
    when = "the audio is too quiet to drive a mouth"
    raised_by = frozenset({"render"})

from musetalk_server.api import create_app
from musetalk_server.config import Settings
from musetalk_server.docs_tables import error_table

app = create_app(Settings(_env_file=None, engine="lite"))
print(json.dumps({"spec": app.openapi(), "table": error_table()}))
"""


def test_an_error_code_added_to_the_tree_reaches_the_openapi_and_the_table(tmp_path):
    run = subprocess.run([sys.executable, "-c", _ADD_AN_ERROR], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO / "service")}, check=True)
    out = json.loads(run.stdout)
    spec = out["spec"]
    for path in ("/inference/stream/{avatar_id}", "/inference/batch/{avatar_id}"):
        response = spec["paths"][path]["post"]["responses"]["451"]
        assert response["description"] == "`voice_too_quiet`: the audio is too quiet to drive a mouth"
        assert response["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody", "properties": {"code": {"enum": ["voice_too_quiet"]}}}
    assert "451" not in spec["paths"]["/avatars/{avatar_id}"]["get"]["responses"]  # not a render route
    assert "| 451 | `voice_too_quiet` | the audio is too quiet to drive a mouth |" in out["table"]
    assert "voice_too_quiet" not in error_table()  # this interpreter's tree is the real one


def test_a_code_joins_the_descriptions_of_its_status(tmp_path):
    spec = _openapi(tmp_path)
    conflict = spec["paths"]["/jobs/{job_id}/result"]["get"]["responses"]["409"]["description"]
    assert "`job_not_finished`" in conflict and "`job_failed`" in conflict
    busy = spec["paths"]["/inference/batch/{avatar_id}"]["post"]["responses"]["429"]
    assert "`busy`" in busy["description"] and "`too_many_jobs`" in busy["description"]
    assert "Retry-After" in busy["headers"]


def test_every_error_and_every_setting_is_documented():
    for error in documented_errors():
        assert error.when and error.code and 400 <= error.status < 600, error
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} needs a description: it is docs/configuration.md's text"
    table = settings_table()
    assert all(f"`MUSETALK_{name.upper()}`" in table for name in Settings.model_fields)
    assert "| `MUSETALK_ENGINE` | `auto` | `auto`, `lite`, `musetalk` |" in table
    assert "| `MUSETALK_PORT` | `8000` | integer ≥ 1, ≤ 65535 |" in table


def test_the_marker_writer_replaces_only_between_its_markers():
    text = "intro\n<!-- generated:t -->\nold\n<!-- /generated:t -->\nafter\n"
    assert replace_between_markers(text, "t", "new\n") == "intro\n<!-- generated:t -->\nnew\n<!-- /generated:t -->\nafter\n"
    with pytest.raises(ValueError, match="generated:other"):
        replace_between_markers(text, "other", "x")
