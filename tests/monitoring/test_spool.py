"""The on-disk spool: durable appends, exclusive claims, crash leftovers."""

from __future__ import annotations

import threading
from pathlib import Path

from monitoring.spool import CLAIMED_SUFFIX, READY_SUFFIX, REJECTED_FOLDER, Spool


def rows(start: int, stop: int) -> list[dict[str, int]]:
    return [{"n": n} for n in range(start, stop)]


def replay_all(spool: Spool) -> list[int]:
    seen: list[int] = []
    while (claimed := spool.claim()) is not None:
        for batch in claimed.batches(7):
            seen.extend(row["n"] for row in batch)
        claimed.done()
    return seen


def test_appended_rows_are_replayed_once_then_gone(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append(rows(0, 10))
    spool.append(rows(10, 25))
    assert spool.has_files()
    assert replay_all(spool) == list(range(25))
    assert not spool.has_files()
    assert replay_all(spool) == []


def test_a_claim_renames_so_nobody_else_gets_the_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(rows(0, 3))
    claimed = spool.claim()
    assert claimed is not None and claimed.path.name.endswith(CLAIMED_SUFFIX)
    assert Spool(tmp_path).claim() is None  # locked by a live claimer
    spool.append(rows(3, 5))  # goes to a new file, not into the claimed one
    assert [r["n"] for b in claimed.batches(10) for r in b] == [0, 1, 2]
    claimed.done()
    assert replay_all(spool) == [3, 4]


def test_concurrent_claimers_split_the_files(tmp_path: Path) -> None:
    for start in range(0, 200, 10):
        Spool(tmp_path).append(rows(start, start + 10))  # twenty files
    seen: list[list[int]] = [[] for _ in range(4)]
    threads = [
        threading.Thread(target=lambda i=i: seen[i].extend(replay_all(Spool(tmp_path))))
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = sorted(n for part in seen for n in part)
    assert everything == list(range(200))


def test_a_released_claim_is_claimed_again(tmp_path: Path) -> None:
    """A replayer that failed (or crashed: the kernel drops its lock) leaves the file."""
    spool = Spool(tmp_path)
    spool.append(rows(0, 4))
    claimed = spool.claim()
    assert claimed is not None
    claimed.release()
    assert [p.suffix for p in tmp_path.iterdir()] == [CLAIMED_SUFFIX]
    assert replay_all(Spool(tmp_path)) == [0, 1, 2, 3]


def test_a_torn_line_costs_only_itself(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(rows(0, 2))
    (active,) = tmp_path.glob(f"*{READY_SUFFIX}")
    with active.open("ab") as handle:
        handle.write(b'{"n": 9')  # a crash in the middle of a write
    spool.append(rows(2, 4))
    claimed = spool.claim()
    assert claimed is not None
    assert [r["n"] for b in claimed.batches(10) for r in b] == [0, 1, 2, 3]
    assert claimed.corrupt == [b'{"n": 9']
    claimed.done()


def test_rejected_rows_are_kept_apart_and_never_replayed(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.reject([{"n": 1}, b"not json"])
    assert not spool.has_files()
    kept = (tmp_path / REJECTED_FOLDER / f"predictions{READY_SUFFIX}").read_bytes()
    assert kept == b'{"n":1}\nnot json\n'


def test_kinds_do_not_mix(tmp_path: Path) -> None:
    Spool(tmp_path, prefix="labels").append(rows(0, 1))
    assert Spool(tmp_path, prefix="predictions").claim() is None
    assert Spool(tmp_path, prefix="labels").has_files()
