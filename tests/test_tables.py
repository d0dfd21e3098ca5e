import logging

import numpy as np
import pytest

from wm_jax.data.tables import align_to_samples, expand_names, read_table
from wm_jax.errors import InputError


def _write(path, text):
    path.write_text(text)
    return path


def test_plink2_header_forms_and_missing_tokens(tmp_path):
    a = read_table(_write(tmp_path / "a.tsv", "#FID\tIID\tx\ty\nf1\ti1\t1.5\tNA\nf2\ti2\t\t3\nf3\ti3\tnan\t-2e-3\n"))
    assert a.columns == ["x", "y"] and list(a.iid) == ["i1", "i2", "i3"]
    np.testing.assert_array_equal(np.isnan(a.values), [[False, True], [True, False], [True, False]])
    assert a.values[2, 1] == -2e-3
    b = read_table(_write(tmp_path / "b.txt", "FID IID x\nf1 i1 2\nf2 i2 NA\n"))
    assert b.values[0, 0] == 2 and np.isnan(b.values[1, 0])
    c = read_table(_write(tmp_path / "c.tsv", "#IID\tx\ni2\t5\n"))
    assert c.fid is None and c.values[0, 0] == 5


def test_alignment_to_fam_reports_counts(tmp_path, caplog):
    table = read_table(_write(tmp_path / "p.tsv", "FID\tIID\tx\nf3\ti3\t3\nf1\ti1\t1\nzz\tzz\t9\n"))
    fid = np.array(["f1", "f2", "f3"])
    iid = np.array(["i1", "i2", "i3"])
    with caplog.at_level(logging.INFO, logger="wm_jax"):
        aligned = align_to_samples(table, fid, iid)
    np.testing.assert_array_equal(aligned[:, 0], [1, np.nan, 3])
    assert "3 samples read, 2 matched, 1 dropped" in caplog.text and "1 genotyped samples absent" in caplog.text
    # Same IID with another FID does not match.
    other = read_table(_write(tmp_path / "q.tsv", "FID\tIID\tx\nXX\ti1\t1\n"))
    with pytest.raises(InputError, match=r"q\.tsv: no sample matches"):
        align_to_samples(other, fid, iid)
    by_iid = read_table(_write(tmp_path / "r.tsv", "IID\tx\ni2\t7\n"))
    np.testing.assert_array_equal(align_to_samples(by_iid, fid, iid)[:, 0], [np.nan, 7, np.nan])


@pytest.mark.parametrize(
    "text, message",
    [
        ("FID\tx\nf1\t1\n", r"header must start with FID IID"),
        ("FID\tIID\tx\nf1\ti1\tabc\n", r"line 2, column x: expected a finite number or NA, found 'abc'"),
        ("FID\tIID\tx\nf1\ti1\t1\nf1\ti1\t2\n", r"line 3: sample f1 i1 appears more than once"),
        ("", r"empty file"),
        ("FID\tIID\tx\tx\nf\ti\t1\t2\n", r"duplicate column names"),
    ],
)
def test_bad_tables(tmp_path, text, message):
    path = _write(tmp_path / "bad.tsv", text)
    with pytest.raises(InputError, match=r"bad\.tsv: " + message):
        read_table(path)


def test_missing_table_file(tmp_path):
    with pytest.raises(InputError, match=r"none\.tsv: table not found"):
        read_table(tmp_path / "none.tsv")


def test_plink2_style_name_ranges():
    available = ["UDIP1", "UDIP2", "UDIP3", "age", "PC1"]
    assert expand_names("UDIP1-UDIP3", available) == ["UDIP1", "UDIP2", "UDIP3"]
    assert expand_names("UDIP2,age", available) == ["UDIP2", "age"]
    assert expand_names("age-PC1", available) == ["age", "PC1"]
    assert expand_names(None, available) is None
