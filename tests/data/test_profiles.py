"""Data profiles: the built-in Telco mapping, and bad profiles failing fast by name."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from core.settings import PROJECT_ROOT, TARGET_COLUMN
from training.data import load_table, prepare_table
from training.profiles import ProfileError, apply_profile, load_profile

TELCO = PROJECT_ROOT.parent / "shared" / "data" / "telco.csv"


@pytest.fixture(scope="module")
def telco() -> pd.DataFrame:
    return load_table(TELCO)


def test_telco_profile_maps_the_real_table(telco: pd.DataFrame) -> None:
    frame, extras = apply_profile(telco, load_profile("telco"))
    assert extras == []
    assert len(frame) == 7043
    assert frame[TARGET_COLUMN].sum() == 1869
    assert set(frame["internet_service"].dropna()) == {"DSL", "Fiber", "None"}
    assert "age" not in frame.columns and "support_calls" not in frame.columns
    typed, report = prepare_table(frame)
    assert typed["total_charges"].isna().sum() == 11  # blank for customers with tenure 0
    assert not typed.loc[typed["customer_id"] == "7590-VHVEG", "multiple_lines"].item()
    no_internet = typed["internet_service"] == "None"
    assert not typed.loc[no_internet, "online_security"].any()
    assert report.rows_out == 7043


def profile_file(tmp_path: Path, **changes: object) -> Path:
    profile = {
        "name": "mini",
        "rename": {"id": "customer_id", "months": "tenure_months", "net": "internet_service"},
        "values": {"internet_service": {"FIB": "Fiber"}},
        "target": {"column": "left", "positive": "Y"},
    }
    profile.update(changes)
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


MINI = pd.DataFrame({"id": ["a", "b"], "months": [1, 2], "net": ["FIB", "DSL"], "left": ["Y", "N"]})


def test_a_column_the_table_lacks_is_named(tmp_path: Path) -> None:
    profile = load_profile(profile_file(tmp_path))
    with pytest.raises(ProfileError, match="'months'"):
        apply_profile(MINI.drop(columns=["months"]), profile)


def test_an_unmapped_value_is_named_with_its_column(tmp_path: Path) -> None:
    profile = load_profile(profile_file(tmp_path))
    table = MINI.assign(net=["FIB", "Cable"])
    with pytest.raises(ProfileError, match=r"'net'.*Cable"):
        apply_profile(table, profile)


def test_a_missing_target_is_named(tmp_path: Path) -> None:
    profile = load_profile(profile_file(tmp_path))
    with pytest.raises(ProfileError, match="'left'"):
        apply_profile(MINI.drop(columns=["left"]), profile)


def test_a_target_value_never_seen_is_refused(tmp_path: Path) -> None:
    profile = load_profile(profile_file(tmp_path, target={"column": "left", "positive": "Yes"}))
    with pytest.raises(ProfileError, match="positive value 'Yes'"):
        apply_profile(MINI, profile)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rename": {"id": "customer_identifier"}}, "customer_identifier"),
        ({"values": {"colour": {"a": "b"}}}, "colour"),
        ({"extras": [{"name": "age", "kind": "number"}]}, "clashes"),
        ({"extras": [{"name": "x", "kind": "text"}]}, "kind"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_malformed_profiles_fail_naming_the_problem(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ProfileError, match=message):
        load_profile(profile_file(tmp_path, **changes))


def test_unknown_builtin_profile_lists_the_known_ones() -> None:
    with pytest.raises(ProfileError, match="telco"):
        load_profile("salesforce")
