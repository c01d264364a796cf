"""Data profiles: the built-in Telco mapping, and bad profiles failing fast by name."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from core.pipeline.extras import ExtraColumn
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


# --- Derived columns and generated ids ---------------------------------------------------

CALLS = pd.DataFrame(
    {
        "months": [3, 12, 30],
        "day_charge": [10.0, 20.0, 5.0],
        "eve_charge": ["1.5", " ", "2"],  # text with a blank, as a CSV export gives it
        "night_charge": [2.0, 3.0, 0.0],
        "calls": [1, 7, 0],
        "left": ["Y", "N", "N"],
        "internet_service": ["DSL"] * 3,
        "contract": ["Month-to-month"] * 3,
        "payment_method": ["Electronic check"] * 3,
    }
)


def derive_profile(tmp_path: Path, derive: dict[str, str], **changes: object) -> Path:
    base: dict[str, object] = {
        "rename": {"months": "tenure_months"},
        "values": {},
        "derive": derive,
        "generate_id": True,
    }
    return profile_file(tmp_path, **{**base, **changes})


def test_derive_computes_fields_and_extras_from_the_renamed_table(tmp_path: Path) -> None:
    derive = {
        "total_charges": "day_charge + eve_charge + night_charge",
        "monthly_charges": "(day_charge + night_charge) / tenure_months",
        "busy": "calls > 5",
        "evening": "eve_charge > 1.8",  # missing where eve_charge is, not False
    }
    extras = [{"name": "busy", "kind": "number"}, {"name": "evening", "kind": "number"}]
    profile = load_profile(derive_profile(tmp_path, derive, extras=extras))
    frame, _ = apply_profile(CALLS, profile)
    assert frame["total_charges"].tolist()[::2] == [13.5, 7.0]
    assert pd.isna(frame["total_charges"].iloc[1])  # a missing part leaves the sum missing
    assert frame["monthly_charges"].tolist() == [4.0, 23.0 / 12, 5.0 / 30]
    assert frame["busy"].tolist() == [False, True, False]
    assert frame["evening"].tolist() == [False, pd.NA, True]
    typed, report = prepare_table(frame, [ExtraColumn("evening", "number", (), False)])
    assert report.rows_out == 3 and typed["total_charges"].iloc[0] == 13.5
    assert typed["evening"].isna().tolist() == [False, True, False]


def test_an_unknown_name_in_an_expression_names_the_column_and_the_key(tmp_path: Path) -> None:
    profile = load_profile(derive_profile(tmp_path, {"total_charges": "day_charge + eve"}))
    with pytest.raises(ProfileError, match=r"derive\.total_charges: unknown column\(s\) \['eve'\]"):
        apply_profile(CALLS, profile)


def test_a_renamed_column_is_read_under_its_new_name(tmp_path: Path) -> None:
    profile = load_profile(derive_profile(tmp_path, {"total_charges": "months * day_charge"}))
    with pytest.raises(ProfileError, match=r"\['months'\].*tenure_months"):
        apply_profile(CALLS, profile)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("day_charge +", "derive.total_charges: syntax error in 'day_charge +'"),
        ("__import__('os')", "calling '__import__' is not allowed"),
        ("day_charge.__class__", "Attribute is not allowed"),
        ("[day_charge][0]", "is not allowed"),
        ("sqrt(day_charge, 2)", "takes one argument"),
        ("lambda: 1", "Lambda is not allowed"),
    ],
)
def test_a_bad_expression_is_refused_when_the_profile_loads(
    tmp_path: Path, expression: str, message: str
) -> None:
    with pytest.raises(ProfileError, match=re.escape(message)):
        load_profile(derive_profile(tmp_path, {"total_charges": expression}))


def test_derive_targets_must_be_fields_or_extras(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"derive\.colour: not a customer field"):
        load_profile(derive_profile(tmp_path, {"colour": "calls"}))


def test_generated_ids_are_stable_and_unique(tmp_path: Path) -> None:
    path = tmp_path / "calls.csv"
    pd.concat([CALLS, CALLS]).to_csv(path, index=False)  # identical rows keep their own ids
    derive = {"monthly_charges": "day_charge * 2", "total_charges": "day_charge * 3"}
    profile = load_profile(derive_profile(tmp_path, derive))
    first, _ = apply_profile(load_table(path), profile)
    again, _ = apply_profile(load_table(path), profile)
    assert first["customer_id"].tolist() == [f"row-{n}" for n in range(6)]
    assert again["customer_id"].tolist() == first["customer_id"].tolist()
    _, report = prepare_table(first)
    assert report.duplicates_dropped == 0 and report.rows_out == 6


def test_without_ids_or_generate_id_the_profile_says_how_to_fix_it(tmp_path: Path) -> None:
    profile = load_profile(derive_profile(tmp_path, {}, generate_id=False))
    with pytest.raises(ProfileError, match="generate_id: true"):
        apply_profile(CALLS, profile)


def test_generate_id_with_an_id_column_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="generate_id"):
        load_profile(derive_profile(tmp_path, {}, rename={"id": "customer_id"}))


def test_backticks_name_columns_that_are_not_identifiers(tmp_path: Path) -> None:
    # (safe_dump sorts keys: monthly_charges is written, and so derived, first)
    derive = {"monthly_charges": "`day charge` * 2", "total_charges": "monthly_charges * 3"}
    profile = load_profile(derive_profile(tmp_path, derive))
    frame, _ = apply_profile(CALLS.rename(columns={"day_charge": "day charge"}), profile)
    assert frame["monthly_charges"].tolist() == [20.0, 40.0, 10.0]
    assert frame["total_charges"].tolist() == [60.0, 120.0, 30.0]  # reads the derived column
