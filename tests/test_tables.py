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


def test_the_fast_reader_gives_the_strict_readers_table(tmp_path, monkeypatch):
    """A clean tab-separated table is read by pyarrow (`_read_tab_separated`), to the same values,
    missing values and IDs as the strict reader; a table it cannot take cleanly (here inf, -nan,
    an overflow) goes to the strict reader, which names the problem."""
    from wm_jax.data import tables

    rng = np.random.default_rng(3)
    values = np.round(rng.standard_normal((57, 5)), 5).astype(object)
    values[rng.random(values.shape) < 0.1] = "NA"
    values[2, 1], values[3, 2], values[4, 3], values[5, 4], values[6, 0] = "nan", ".", "", "-9", "1e-300"
    lines = ["#FID\tIID\ta\tb\tc\td\tsite"] + [
        f"f{i}\ti{i}\t" + "\t".join(map(str, row[:4])) + f"\ts{i % 3}" for i, row in enumerate(values)
    ]
    path = tmp_path / "t.tsv"
    path.write_text("\n".join(lines) + "\n")
    assert tables._read_tab_separated(path, ("site",), -9.0, ()) is not None
    fast = read_table(path, text_columns=("site",), missing_code=-9.0)
    monkeypatch.setattr(tables, "_read_tab_separated", lambda *args: None)
    strict = read_table(path, text_columns=("site",), missing_code=-9.0)
    np.testing.assert_array_equal(fast.values, strict.values)  # NaN where missing, in both
    assert np.isnan(fast.values).sum() > 10 and fast.columns == strict.columns == ["a", "b", "c", "d"]
    assert (fast.fid == strict.fid).all() and (fast.iid == strict.iid).all()
    assert (fast.text["site"] == strict.text["site"]).all()
    monkeypatch.undo()
    for bad in ("inf", "-nan", "1e999"):
        path.write_text("FID\tIID\ta\nf1\ti1\t1\nf2\ti2\t" + bad + "\n")
        assert tables._read_tab_separated(path, (), None, ()) is None
        with pytest.raises(InputError, match="line 3, column a: expected a finite number"):
            read_table(path)
    path.write_text("FID\tIID\ta\nf1\ti1\t1\nf2\ti2\t 2\n")  # a padded field: 2 in both readers
    assert tables._read_tab_separated(path, (), None, ()).values[1, 0] == 2.0 == read_table(path).values[1, 0]
