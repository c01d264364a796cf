"""The drift the Day 30 tests send: tenure shifted by 1.5 reference standard deviations,
and what that shift must push to significant."""

from __future__ import annotations

SHIFT = {"tenure_months": 1.5}

DERIVED_FROM_TENURE = {
    # raw inputs: tenure itself and the inputs computed from it
    "tenure_months",
    "signup_date",
    "total_charges",
    # engineered features built on tenure
    "is_new_customer",
    "loyalty_level",
    "tenure_months_binned",
    "tenure_years",
    "days_since_signup",
    "customer_lifetime_value",
    "monthly_to_total_ratio",
    "support_calls_per_month",
    "engagement_score",
}
"""What a tenure shift must push to significant. (avg_monthly_spend = total / tenure is
built on tenure too, but tenure cancels out of it: it stays below 0.1.)"""
