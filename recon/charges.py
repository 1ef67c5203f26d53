"""B2C payouts on the statement with their charge rows, and what the tariff expected of them.

A payout row is a statement row of the payment role that withdraws money under a B2C Reason
Type (Business Payment to Customer, Salary Payment, Promotion Payment; the Details when the
Reason Type is blank). Its charge rows are the rows of the charge role carrying its receipt:
the portal lists a charge under its payment's receipt (REFERENCE 12.1). A receipt's payout rows
are charged once each; a payout whose Reason Type says 'Withdrawal Charge Paid' is charged the
tariff's withdrawal-charges-paid variant, every other one the charge to a registered recipient
(a B2C payout to an unregistered one is refused, so none is completed). The tariff in force is
the one of the Nairobi day the payout row completed on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recon.rules import NAIROBI
from recon.statement import ROLE_CHARGE, ROLE_PAYMENT, flags_per_unique
from recon.tariff import Tariff

B2C_PAYOUT = r"payment to customer|salary payment|promotion payment|business payment to"
WITHDRAWAL_CHARGE_PAID = r"withdrawal charges? paid"
UNKNOWN = -1  # Quote.cents where the tariff does not say


@dataclass(frozen=True)
class StatementCharges:
    """`payouts`: one row per receipt of the statement's B2C payout rows (its first row's line,
    file, time and amount; `rows`, how many payout rows carry it; `kind`, the tariff column;
    `charged_cents`, its charge rows' sum; `charge_rows`). `orphans`: charge rows whose receipt
    is on no other row of the statement. `shown`: whether the statement shows B2C charges at all
    (a charge row of a payout, or of no payment); a collection's charge rows do not count."""

    payouts: pd.DataFrame
    orphans: pd.DataFrame
    shown: bool


def statement_charges(entries: pd.DataFrame) -> StatementCharges:
    """The statement's payout rows with their charges, and its charge rows of no payment."""
    roles = entries["role"].to_numpy()
    charges = entries[(roles == ROLE_CHARGE) & entries["receipt"].notna().to_numpy()]
    described = entries["reason_type"].fillna(entries["details"])
    withdrawn = (entries["withdrawn_cents"].fillna(0) > 0).to_numpy()
    paid_in = (entries["paid_in_cents"].fillna(0) > 0).to_numpy()
    payout_rows = entries[
        (roles == ROLE_PAYMENT)
        & withdrawn
        & ~paid_in
        & entries["receipt"].notna().to_numpy()
        & _matches(described, B2C_PAYOUT)
    ]
    per_receipt = charges.groupby("receipt", sort=False)["withdrawn_cents"].agg(["sum", "size"])
    payouts = payout_rows.drop_duplicates("receipt").copy()
    payouts["rows"] = payouts["receipt"].map(payout_rows["receipt"].value_counts()).astype(int)
    payouts["kind"] = np.where(
        _matches(described[payouts.index], WITHDRAWAL_CHARGE_PAID),
        "withdrawal_charges_paid",
        "registered",
    )
    charged = per_receipt["sum"].reindex(payouts["receipt"]).fillna(0).astype("int64")
    payouts["charged_cents"] = charged.to_numpy()
    counted = per_receipt["size"].reindex(payouts["receipt"]).fillna(0).astype("int64")
    payouts["charge_rows"] = counted.to_numpy()
    others = entries["receipt"][roles != ROLE_CHARGE]
    orphans = charges[~charges["receipt"].isin(others).to_numpy()].copy()
    orphans["amount_cents"] = orphans["withdrawn_cents"]
    shown = bool((payouts["charge_rows"] > 0).any()) or not orphans.empty
    return StatementCharges(payouts=payouts, orphans=orphans, shown=shown)


def expected_charges(payouts: pd.DataFrame, tariff: Tariff) -> pd.DataFrame:
    """`payouts` (StatementCharges.payouts) with `day` (Nairobi), `expected_cents` (the
    tariff's charge times the payout rows; UNKNOWN where the tariff does not say) and `band`."""
    days = nairobi_days(payouts["completed_at"])
    amounts = payouts["withdrawn_cents"].fillna(0).to_numpy(dtype=np.int64)
    quote = tariff.quote(amounts, days, payouts["kind"].to_numpy(dtype=object))
    known = (quote.cents >= 0) & ~np.isnat(days)
    expected = np.where(known, quote.cents * payouts["rows"].to_numpy(), UNKNOWN)
    return payouts.assign(day=days, expected_cents=expected, band=quote.bands)


def nairobi_days(times: pd.Series) -> np.ndarray:
    """The Nairobi calendar day of each naive-UTC time, as datetime64[D] (NaT where none)."""
    local = times.dt.tz_localize("UTC").dt.tz_convert(NAIROBI).dt.tz_localize(None)
    return local.to_numpy().astype("datetime64[D]")


def totals_per_day(payouts: pd.DataFrame, orphans: pd.DataFrame) -> pd.DataFrame:
    """Per Nairobi day: payout rows, KES charged (their charge rows and the charges of no
    payout), KES the tariff expected of the payouts it has a charge for, and how many payouts
    it has none for (not checked). Amounts as cents."""
    columns = ["day", "payouts", "charged_cents", "expected_cents", "not_checked"]
    known = payouts["expected_cents"] >= 0
    per_payout = pd.DataFrame(
        {
            "day": payouts["day"].to_numpy(),
            "payouts": payouts["rows"].to_numpy(),
            "charged_cents": payouts["charged_cents"].to_numpy(),
            "expected_cents": payouts["expected_cents"].where(known, 0).to_numpy(),
            "not_checked": (~known).astype(int).to_numpy(),
        }
    )
    per_orphan = pd.DataFrame(
        {
            "day": nairobi_days(orphans["completed_at"]),
            "payouts": 0,
            "charged_cents": orphans["amount_cents"].fillna(0).to_numpy(dtype=np.int64),
            "expected_cents": 0,
            "not_checked": 0,
        }
    )
    parts = [part for part in (per_payout, per_orphan) if len(part)]
    if not parts:
        return pd.DataFrame(columns=columns)
    both = pd.concat(parts, ignore_index=True).dropna(subset=["day"])
    return both.groupby("day", sort=True, as_index=False)[columns[1:]].sum()[columns]


def _matches(texts: pd.Series, pattern: str) -> np.ndarray:
    def matches(uniques: pd.Series) -> pd.Series:
        collapsed = uniques.str.replace(r"\s+", " ", regex=True)
        return collapsed.str.contains(pattern, case=False, regex=True)

    return flags_per_unique(texts, matches)
