"""Ground-truth labels: idempotent upserts, label files, the spool while the database is down."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, select

from core.tables import TABLE_SUFFIXES, YES_NO_WORDS
from monitoring.database import GROUND_TRUTH
from monitoring.feedback import (
    Label,
    LabelFileError,
    label_rows,
    read_label_file,
    spool_labels,
    store_labels,
    upsert_ground_truth,
)
from monitoring.identity import customer_hash
from monitoring.prediction_log import PredictionLog

Count = Callable[..., int]
DAY = date(2025, 3, 31)


def labels_in(engine: Engine) -> dict[tuple[str, date], bool]:
    with engine.connect() as connection:
        rows = connection.execute(select(GROUND_TRUTH)).mappings().all()
    return {(r["customer_hash"], r["observed_date"]): r["churned"] for r in rows}


def test_labels_are_validated() -> None:
    assert Label.model_validate(
        {"customer_id": "C1", "churned": "yes", "observed_date": "2025-03-31"}
    ) == Label(customer_id="C1", churned=True, observed_date=DAY)
    for bad in ({"customer_id": "", "churned": True}, {"customer_id": "x" * 129, "churned": 1}):
        with pytest.raises(ValidationError):
            Label.model_validate({**bad, "observed_date": "2025-03-31"})


def test_storing_labels_again_changes_nothing_but_updates(
    engine: Engine, secret: bytes, count: Count
) -> None:
    labels = [Label(customer_id=f"C{i}", churned=i % 2 == 0, observed_date=DAY) for i in range(10)]
    assert store_labels(engine, labels, secret) == 10
    assert store_labels(engine, labels, secret) == 10
    assert count(engine, GROUND_TRUTH) == 10
    corrected = Label(customer_id="C0", churned=False, observed_date=DAY)
    later = Label(customer_id="C0", churned=True, observed_date=DAY + timedelta(days=30))
    assert store_labels(engine, [corrected, corrected, later], secret) == 2
    stored = labels_in(engine)
    hashed = customer_hash("C0", secret)
    assert stored[hashed, DAY] is False
    assert stored[hashed, DAY + timedelta(days=30)] is True
    assert count(engine, GROUND_TRUTH) == 11
    assert all("C0" not in key for key, _ in stored)


def test_an_older_label_never_overwrites_a_newer_one(engine: Engine, secret: bytes) -> None:
    """A label replayed late from the spool must not undo a correction."""
    now = datetime.now(UTC)
    newer = label_rows([Label(customer_id="C1", churned=False, observed_date=DAY)], secret, now)
    older = label_rows(
        [Label(customer_id="C1", churned=True, observed_date=DAY)], secret, now - timedelta(hours=1)
    )
    with engine.begin() as connection:
        upsert_ground_truth(connection, newer)
    with engine.begin() as connection:
        upsert_ground_truth(connection, older)
    assert labels_in(engine) == {(customer_hash("C1", secret), DAY): False}


def test_spooled_labels_are_stored_by_the_prediction_log(
    engine: Engine, tmp_path: Path, secret: bytes, count: Count, wait_for: Callable[..., None]
) -> None:
    spool_dir = tmp_path / "spool"
    labels = [Label(customer_id=f"C{i}", churned=True, observed_date=DAY) for i in range(5)]
    assert spool_labels(spool_dir, labels, secret) == 5
    assert spool_labels(spool_dir, labels, secret) == 5  # the client retried
    assert "C1" not in "".join(p.read_text() for p in spool_dir.glob("labels-*"))
    with PredictionLog(engine, spool_dir) as log:
        wait_for(lambda: log.stats().replayed == 10, what="labels replayed")
    assert count(engine, GROUND_TRUTH) == 5
    assert not list(spool_dir.glob("labels-*"))


# Label files.


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_labels_accept_the_usual_spellings_of_booleans(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "labels.csv",
        "customer_id,churned,observed_date,note\n"
        "C1,yes,2025-03-31,x\nC2,No,2025-03-31,\nC3,1,2025-03-31,\n"
        "C4,false,2025-03-31,\nC5,TRUE,2025-04-01,\n",
    )
    labels = read_label_file(path)
    assert [(x.customer_id, x.churned) for x in labels] == [
        ("C1", True), ("C2", False), ("C3", True), ("C4", False), ("C5", True),
    ]  # fmt: skip
    assert labels[-1].observed_date == date(2025, 4, 1)


def test_gzipped_csv_labels_with_single_letter_words(tmp_path: Path) -> None:
    """What training tables accept (`core.tables`): .csv.gz, and y/n/t/f for yes and no."""
    path = tmp_path / "labels.CSV.GZ"
    body = "customer_id,churned,observed_date\nC1,y,2025-03-31\nC2,N,2025-03-31\n"
    path.write_bytes(gzip.compress((body + "C3, t ,2025-03-31\nC4,f,2025-03-31\n").encode()))
    labels = read_label_file(path)
    assert [(x.customer_id, x.churned) for x in labels] == [
        ("C1", True), ("C2", False), ("C3", True), ("C4", False),
    ]  # fmt: skip


def test_every_yes_no_word_of_core_tables(tmp_path: Path) -> None:
    words = sorted(YES_NO_WORDS)
    lines = "".join(f"C{i},{w.upper()},2025-03-31\n" for i, w in enumerate(words))
    path = write_csv(tmp_path / "labels.csv", "customer_id,churned,observed_date\n" + lines)
    assert [x.churned for x in read_label_file(path)] == [YES_NO_WORDS[w] for w in words]


def test_a_bad_gzip_file_is_a_label_file_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "labels.csv.gz", "customer_id,churned,observed_date\n")
    with pytest.raises(LabelFileError, match="not a readable gzip file"):
        read_label_file(path)


def test_an_unknown_file_type_names_every_accepted_one(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "labels.xlsx", "x")
    with pytest.raises(LabelFileError, match=r"unsupported file type '\.xlsx'") as caught:
        read_label_file(path)
    assert all(suffix in str(caught.value) for suffix in TABLE_SUFFIXES)


def test_parquet_labels(tmp_path: Path) -> None:
    table = pa.table(
        {
            "customer_id": ["C1", "C2"],
            "churned": [True, False],
            "observed_date": pa.array([DAY, DAY], pa.date32()),
        }
    )
    pq.write_table(table, tmp_path / "labels.parquet")
    labels = read_label_file(tmp_path / "labels.parquet")
    assert labels == [
        Label(customer_id="C1", churned=True, observed_date=DAY),
        Label(customer_id="C2", churned=False, observed_date=DAY),
    ]


def test_parquet_errors_name_the_row_and_column(tmp_path: Path) -> None:
    table = pa.table({"customer_id": ["C1", "C2"], "churned": [1, 2], "observed_date": [DAY] * 2})
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(LabelFileError, match=r"row 2, column 'churned': 2 is not a boolean") as e:
        read_label_file(tmp_path / "bad.parquet")
    assert (e.value.row, e.value.column) == (2, "churned")


@pytest.mark.parametrize(
    ("body", "row", "column", "message"),
    [
        ("C1,maybe,2025-03-31", 1, "churned", "'maybe' is not a boolean"),
        ("C1,yes,31/03/2025", 1, "observed_date", "'31/03/2025' is not a date"),
        ("C1,yes,2025-03-31\n,no,2025-03-31", 2, "customer_id", "missing value"),
        ("C1,yes,2025-03-31\nC2,yes", 2, "observed_date", "missing value"),
        (f"{'x' * 129},yes,2025-03-31", 1, "customer_id", "at most 128 characters"),
    ],
)
def test_csv_errors_name_the_row_and_column(
    tmp_path: Path, body: str, row: int, column: str, message: str
) -> None:
    path = write_csv(tmp_path / "labels.csv", "customer_id,churned,observed_date\n" + body + "\n")
    with pytest.raises(LabelFileError) as error:
        read_label_file(path)
    assert (error.value.row, error.value.column) == (row, column)
    assert f"row {row} (line {row + 1}), column '{column}'" in str(error.value)
    assert message in str(error.value)


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "labels.csv", "customer_id,observed_date\nC1,2025-03-31\n")
    with pytest.raises(LabelFileError, match="missing column 'churned'") as error:
        read_label_file(path)
    assert error.value.column == "churned"


def test_unsupported_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LabelFileError, match="no such file"):
        read_label_file(tmp_path / "absent.csv")
    (tmp_path / "labels.xlsx").write_bytes(b"")
    with pytest.raises(LabelFileError, match="unsupported"):
        read_label_file(tmp_path / "labels.xlsx")
