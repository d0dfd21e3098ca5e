"""The output policy (`wm_jax.publish`): each command's declared entries, run directories, records."""

import json

import pytest

from wm_jax.errors import InputError
from wm_jax.publish import (
    Output,
    atomic_dir,
    check_output_dir,
    check_output_files,
    check_output_location,
    run_directory,
    write_marker,
    written_by,
)

REPORTLIKE = Output("report", frozenset({"loci.tsv", "report.md"}))


def test_overwrite_replaces_an_unmarked_directory_of_the_declared_entries_only(tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "loci.tsv").write_text("old\n")
    with pytest.raises(InputError, match="pass --overwrite"):
        check_output_dir(out, REPORTLIKE)
    assert check_output_dir(out, REPORTLIKE, overwrite=True) == out
    (out / "notes.txt").write_text("mine\n")
    with pytest.raises(InputError, match="'notes.txt', which wm-jax report does not write"):
        check_output_dir(out, REPORTLIKE, overwrite=True)
    # Another command's declaration does not cover them.
    with pytest.raises(InputError, match="'loci.tsv', which wm-jax genes does not write"):
        (out / "notes.txt").unlink()
        check_output_dir(out, Output("genes", frozenset({"genes.tsv"})), overwrite=True)


def test_entries_may_be_declared_as_names_separated_by_spaces():
    assert Output("report", "loci.tsv  report.md\n").entries == REPORTLIKE.entries
    assert Output("export").entries == frozenset()


def test_atomic_dir_marks_the_directory_with_its_command(tmp_path):
    out = tmp_path / "rep"
    with atomic_dir(out, REPORTLIKE) as tmp:
        (tmp / "loci.tsv").write_text("new\n")
    marker = json.loads((out / ".wm-jax-output.json").read_text())
    assert (marker["command"], marker["entries"]) == ("report", ["loci.tsv"])


def test_stages_write_inside_a_run_directory_only_while_it_is_open(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_marker(run, "demo")
    with pytest.raises(InputError, match="is inside"):
        check_output_location(run / "cohort", "simulate")
    with run_directory(run):
        assert check_output_location(run / "cohort", "simulate") == run / "cohort"
    with pytest.raises(InputError, match="is inside"):
        check_output_location(run / "cohort", "simulate")


def test_an_open_run_directory_does_not_open_the_outputs_inside_it(tmp_path):
    run = tmp_path / "run"
    (run / "cohort").mkdir(parents=True)
    write_marker(run, "demo")
    write_marker(run / "cohort", "simulate")
    with run_directory(run), pytest.raises(InputError, match="the output of wm-jax simulate"):
        check_output_location(run / "cohort" / "res", "gwas")


@pytest.mark.parametrize(
    ("record", "command", "legacy_key", "owned"),
    [
        ({"command": "roi"}, "roi", None, True),
        ({"command": "embed"}, "roi", None, False),
        ({}, "roi", None, False),
        ({"checkpoint_step": 3}, "embed", "checkpoint_step", True),  # an older embed manifest names no command
        ({"command": "embed", "checkpoint_step": 3}, "embed", "checkpoint_step", True),
        ({"command": "embed"}, "embed", "checkpoint_step", False),
        ({"command": "roi", "checkpoint_step": 3}, "embed", "checkpoint_step", False),
        ([1, 2], "roi", None, False),
    ],
)
def test_written_by_reads_the_record(tmp_path, record, command, legacy_key, owned):
    path = tmp_path / "out.manifest.json"
    path.write_text(json.dumps(record))
    assert written_by(path, command, legacy_key) is owned


def test_files_of_another_writer_need_overwrite(tmp_path):
    table, record = tmp_path / "out.tsv", tmp_path / "out.tsv.manifest.json"
    table.write_text("x\n")
    record.write_text(json.dumps({"command": "roi"}))
    assert check_output_files([table, record], record, "roi", overwrite=False) == [table, record]
    with pytest.raises(InputError, match="out.tsv: exists and was not written by wm-jax h2"):
        check_output_files([table, record], record, "h2", overwrite=False)
    assert check_output_files([table, record], record, "h2", overwrite=True) == [table, record]
