"""How the records of one run find each other: results to their payouts, receipts to the
payouts and collections that hold them, and our records to the statement's rows.

A result is matched to its payout by the keys of recon.rules.PAYOUT_MATCH_ORDER (the
OriginatorConversationID is the payout's or any of its attempts'), the receipt only for
successful results: a failed result's TransactionID is a placeholder.

Matching hashes each key column once (FirstRows) and then works with integer row positions:
hashing strings is the costly step, so no key column is hashed twice.
`MatchedFrames` holds each derivation as a cached property, so the checks of one run share it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property

import numpy as np
import pandas as pd

from recon.charges import StatementCharges, statement_charges
from recon.frames import Frames
from recon.rules import PAYOUT_MATCH_ORDER
from recon.statement import ROLE_PAYMENT

COMPLETED_STATUSES = frozenset({"completed", "success", "successful", "paid"})
DIRECTIONS = ("withdrawn", "paid in")
# The results' column holding each key of PAYOUT_MATCH_ORDER (and the payout id the service
# records on a result).
RESULT_KEYS = {
    "originator_conversation_id": "ocid",
    "conversation_id": "conversation_id",
    "reference_id": "reference_id",
    "payout_id": "payout_id",
    "receipt": "transaction_id",
}
# Recon also matches by the payout id the service recorded, which names one payout as the ids
# before the receipt do; it sits right after reference_id, ahead of the receipt.
RECON_MATCH_ORDER = (
    *PAYOUT_MATCH_ORDER[: PAYOUT_MATCH_ORDER.index("reference_id") + 1],
    "payout_id",
    *PAYOUT_MATCH_ORDER[PAYOUT_MATCH_ORDER.index("reference_id") + 1 :],
)


@dataclass(frozen=True)
class FirstRows:
    """Where each distinct value of a key column first occurs: hashed once, probed many times."""

    keys: pd.Index  # the distinct non-missing values, in order of first occurrence
    rows: np.ndarray  # the position of each one's first occurrence in the column

    @classmethod
    def of(cls, column: pd.Series) -> FirstRows:
        present = column.notna().to_numpy()
        keys, rows = pd.Index(column[present]), np.flatnonzero(present)
        if not keys.is_unique:  # the hash table built here serves every later lookup
            first = ~keys.duplicated()
            keys, rows = keys[first], rows[first]
        return cls(keys, rows)

    def find(self, values: pd.Series | np.ndarray) -> np.ndarray:
        """The first position holding each value; -1 where absent or missing."""
        found = self.keys.get_indexer(values)
        if not len(self.rows):
            return found
        return np.where(found >= 0, self.rows[found], -1)


@dataclass(frozen=True)
class StatementPayments:
    """The statement's payment rows split by receipt and direction (see
    MatchedFrames.statement_payments)."""

    rows: pd.DataFrame  # the first row of each receipt and direction, the payouts first
    receipts: dict[str, FirstRows]  # per direction: where each receipt's first row is
    repeats: pd.DataFrame  # the later rows of a receipt and direction


@dataclass(frozen=True)
class StatementMatches:
    """Our records and the statement's payment rows, each told about the other."""

    ours: pd.DataFrame  # our_records but repeats, with `statement_cents`
    rows: pd.DataFrame  # statement_payments.rows with `recorded`


def lookup_values(keys: pd.Series, mapping: pd.Series) -> pd.Series:
    """mapping[key] for each key (missing where absent), keeping `mapping`'s dtype even when
    either side is empty (Series.map turns an empty mapping into float64)."""
    values = mapping.reindex(keys.to_numpy()).to_numpy()
    return pd.Series(values, index=keys.index, dtype=mapping.dtype)


def pointing_at(positions: np.ndarray, targets: np.ndarray, size: int) -> np.ndarray:
    """Whether each of `positions` (rows of a `size`-row frame, -1 for none) is one of
    `targets`; -1 never is."""
    hit = np.zeros(size + 1, dtype=bool)  # the extra last slot is the one -1 points at
    hit[targets[targets >= 0]] = True
    return hit[positions]


def collection_references(stk: pd.DataFrame) -> pd.Series:
    """The name a person can follow for each STK collection: its CheckoutRequestID (what
    stk-query takes), else its M-Pesa receipt."""
    return stk["checkout_request_id"].fillna(stk["receipt"])


def collection_receipts(stk: pd.DataFrame) -> pd.DataFrame:
    """Completed STK collections with their reference (collection_references), receipt, the
    amount requested and paid, and the completion time."""
    completed = stk["status"].isin(COMPLETED_STATUSES) | (stk["result_code"] == "0")
    stk = stk[completed]
    return pd.DataFrame(
        {
            "id": stk["id"],
            "reference": collection_references(stk),
            "receipt": stk["receipt"],
            "requested_cents": stk["amount_cents"],
            "amount_cents": stk["paid_amount_cents"].fillna(stk["amount_cents"]),
            "phone": stk["phone"],
            "occurred_at": stk["completed_at"].fillna(stk["created_at"]),
            "reversal_receipt": stk["reversal_receipt"],
        }
    )


def c2b_receipts(c2b: pd.DataFrame) -> pd.DataFrame:
    """C2B payments that carry a receipt (a malformed confirmation has none), named by it,
    with their amount and when they were paid (else received)."""
    c2b = c2b[c2b["receipt"].notna().to_numpy()]
    return pd.DataFrame(
        {
            "id": c2b["id"],
            "reference": c2b["receipt"],
            "receipt": c2b["receipt"],
            "requested_cents": c2b["amount_cents"],
            "amount_cents": c2b["amount_cents"],
            "phone": c2b["msisdn"],
            "occurred_at": c2b["paid_at"].fillna(c2b["received_at"]),
            "reversal_receipt": c2b["reversal_receipt"],
        }
    )


def _with_direction(entries: pd.DataFrame, parts: list[np.ndarray]) -> pd.DataFrame:
    """The entries at the positions in `parts` (withdrawn ones, then paid-in ones) with their
    `direction` and `amount_cents`."""
    rows = entries.iloc[np.concatenate(parts)]
    directions = np.repeat(DIRECTIONS, [len(part) for part in parts])
    rows["direction"] = pd.Series(directions, index=rows.index, dtype="str")
    rows["amount_cents"] = rows["withdrawn_cents"].where(
        rows["direction"] == "withdrawn", rows["paid_in_cents"]
    )
    return rows


class MatchedFrames(Frames):
    """The Frames of one run with what several checks derive from them, each computed once."""

    @classmethod
    def of(cls, frames: Frames) -> MatchedFrames:
        """`frames` itself when already matched, else matched frames over the same data."""
        if isinstance(frames, cls):
            return frames
        return cls(**{item.name: getattr(frames, item.name) for item in fields(Frames)})

    # -- results and payouts --------------------------------------------------------------------

    @cached_property
    def payout_ids(self) -> FirstRows:
        return FirstRows.of(self.payouts["id"])

    @cached_property
    def payout_rows(self) -> np.ndarray:
        """For each payout, the first payout row with its id (-1 when it has none): the row a
        result matched to that id points at."""
        ids, first = self.payouts["id"], self.payout_ids
        rows = np.full(len(ids), -1, dtype=np.int64)
        rows[first.rows] = first.rows
        repeated = np.flatnonzero((rows < 0) & ids.notna().to_numpy())
        rows[repeated] = first.find(ids.to_numpy()[repeated])
        return rows

    def payouts_at(self, targets: np.ndarray) -> np.ndarray:
        """Per payout: whether its first row (the one results point at) is one of `targets`."""
        return pointing_at(self.payout_rows, targets, len(self.payouts))

    @cached_property
    def matched_results(self) -> pd.DataFrame:
        """Results with `payout_ref` (the matched payout's id, or missing), `matched_by`,
        `payout_pos` (the matched payout's first row, -1 for none), whether the result is a
        success, and the matched payout's amount, status, phone and receipt."""
        results = self.results.copy(deep=False)  # copy-on-write: the new columns stay here
        # A status answer's ResultCode says whether the query worked, not whether the money
        # moved; what it states about the payment reaches us as its attempt's receipt.
        results["is_success"] = (results["result_code"] == "0") & (results["kind"] == "result")
        # A status answer row that carries a receipt states the payment with it.
        results["states_receipt"] = results["transaction_id"].notna() & (
            results["is_success"]
            | ((results["result_code"] == "0") & (results["kind"] == "status"))
        )
        payout_ref = np.full(len(results), np.nan, dtype=object)
        matched_by = payout_ref.copy()
        position = np.full(len(results), -1, dtype=np.int64)
        unmatched = np.ones(len(results), dtype=bool)
        for key, pairs, usable in self._match_keys(results):
            todo = np.flatnonzero(unmatched & results[key].notna().to_numpy() & usable)
            if not len(todo):
                continue
            keys, payout_ids, payout_positions = pairs()
            pair = FirstRows.of(keys).find(results[key].to_numpy()[todo])
            hit = pair >= 0
            hit[hit] = pd.notna(payout_ids[pair[hit]])  # a pair without a payout id matches none
            todo, pair = todo[hit], pair[hit]
            payout_ref[todo] = payout_ids[pair]
            matched_by[todo] = key
            position[todo] = payout_positions[pair]
            unmatched[todo] = False
        results["payout_ref"] = pd.Series(payout_ref, index=results.index, dtype="str")
        results["matched_by"] = pd.Series(matched_by, index=results.index, dtype="str")
        results["payout_pos"] = position
        taken = (
            "amount_cents",
            "status",
            "phone",
            "transaction_id",
            "initiated_at",
            "reference_id",
        )
        for column in taken:
            values = self.payouts[column].array.take(position, allow_fill=True)
            results[f"payout_{column}"] = pd.Series(values, index=results.index)
        return results

    def _match_keys(self, results: pd.DataFrame):
        """(results' column, a function building its pairs, which results may use it) in
        RECON_MATCH_ORDER. The pairs are three aligned columns: key value, payout id and that
        payout's first row. They are built only when some result still needs the key."""
        payouts, attempts = self.payouts, self.attempts
        everywhere = np.ones(len(results), dtype=bool)

        def own(column):
            return lambda: (payouts[column], payouts["id"].to_numpy(), self.payout_rows)

        def with_attempts(column):
            if not len(attempts):
                return own(column)

            def pairs():
                attempt_rows = self.payout_ids.find(attempts["payout_id"].to_numpy())
                return (
                    pd.concat([payouts[column], attempts[column]], ignore_index=True),
                    np.concatenate([payouts["id"].to_numpy(), attempts["payout_id"].to_numpy()]),
                    np.concatenate([self.payout_rows, attempt_rows]),
                )

            return pairs

        pairs = {
            "originator_conversation_id": with_attempts("ocid"),
            "conversation_id": with_attempts("conversation_id"),
            "reference_id": own("reference_id"),
            "payout_id": own("id"),
            "receipt": own("transaction_id"),
        }
        usable = {"receipt": results["is_success"].to_numpy()}
        for key in RECON_MATCH_ORDER:
            yield RESULT_KEYS[key], pairs[key], usable.get(key, everywhere)

    # -- evidence of payment --------------------------------------------------------------------

    @cached_property
    def payout_receipts(self) -> pd.DataFrame:
        """Completed payouts with their reference_id, their receipt (the payout's
        transaction_id, else its successful result's), the amount requested, the amount paid
        (the payout's paid_amount, else its successful result's amount, else the amount
        requested) and completion time."""
        completed = self.payouts["status"].isin(COMPLETED_STATUSES).to_numpy()
        columns = ["id", "reference_id", "transaction_id", "amount_cents", "paid_amount_cents"]
        payouts = self.payouts.loc[completed, [*columns, "phone", "completed_at", "initiated_at"]]
        success = self._first_success(np.flatnonzero(completed), payouts.index)
        return pd.DataFrame(
            {
                "id": payouts["id"],
                "reference": payouts["reference_id"],
                "receipt": payouts["transaction_id"].fillna(success["transaction_id"]),
                "requested_cents": payouts["amount_cents"],
                "amount_cents": payouts["paid_amount_cents"]
                .fillna(success["amount_cents"])
                .fillna(payouts["amount_cents"]),
                "phone": payouts["phone"],
                "occurred_at": payouts["completed_at"].fillna(payouts["initiated_at"]),
            }
        )

    def _first_success(self, rows: np.ndarray, index: pd.Index) -> pd.DataFrame:
        """The receipt and amount of the first successful result matched to each payout row in
        `rows` (missing where it has none)."""
        results = self.matched_results
        wanted = self.payout_rows[rows]
        answer_to = results["payout_pos"].to_numpy()
        useful = results["is_success"].to_numpy() & pointing_at(
            answer_to, wanted, len(self.payouts)
        )
        first = results.loc[useful, ["payout_pos", "transaction_id", "amount_cents"]]
        first = first.drop_duplicates("payout_pos").set_index("payout_pos")
        keys = pd.Series(wanted, index=index)
        return pd.DataFrame(
            {
                "transaction_id": lookup_values(keys, first["transaction_id"]),
                "amount_cents": lookup_values(keys, first["amount_cents"]),
            },
            index=index,
        )

    @cached_property
    def receipt_claims(self) -> pd.DataFrame:
        """(payout_pos, receipt) for every receipt a result or status answer matched to a payout
        states, and every receipt an attempt recorded: evidence of payment, not belief (the
        payout's own transaction_id is not in it)."""
        results, attempts = self.matched_results, self.attempts
        stated = results["states_receipt"].to_numpy() & (results["payout_pos"] >= 0).to_numpy()
        attempt_rows = self.payout_ids.find(attempts["payout_id"].to_numpy())
        recorded = attempts["receipt"].notna().to_numpy() & (attempt_rows >= 0)
        return pd.DataFrame(
            {
                "payout_pos": np.concatenate(
                    [results["payout_pos"].to_numpy()[stated], attempt_rows[recorded]]
                ),
                "receipt": np.concatenate(
                    [
                        results["transaction_id"].to_numpy()[stated],
                        attempts["receipt"].to_numpy()[recorded],
                    ]
                ),
            }
        )

    @cached_property
    def payout_evidence(self) -> pd.DataFrame:
        """The distinct (payout row, receipt) pairs of every payout whose evidence of payment
        names a receipt other than the payout's own transaction_id: the receipts its successful
        results and status answers state and its attempts recorded, and its own. Payouts whose
        evidence all agrees with their own receipt (nearly all) are left out. `payout_pos` is
        the payout's first row."""
        claims = self.receipt_claims
        own = self.payouts["transaction_id"].to_numpy()[claims["payout_pos"].to_numpy()]
        other = claims["payout_pos"].to_numpy()[claims["receipt"].to_numpy() != own]
        doubted = np.unique(other)
        mine = self.payouts["transaction_id"].iloc[doubted]
        evidence = pd.concat(
            [
                claims[pointing_at(claims["payout_pos"].to_numpy(), doubted, len(self.payouts))],
                pd.DataFrame({"payout_pos": doubted, "receipt": mine.to_numpy()}),
            ],
            ignore_index=True,
        )
        evidence = evidence[evidence["receipt"].notna()].drop_duplicates(["payout_pos", "receipt"])
        return evidence.reset_index(drop=True)

    @cached_property
    def proven_paid(self) -> np.ndarray:
        """Per payout: whether a result or status answer matched to it states a receipt, or one
        of its attempts recorded one (the payout's own transaction_id is a belief, not
        evidence)."""
        return self.payouts_at(self.receipt_claims["payout_pos"].to_numpy())

    # -- the statement --------------------------------------------------------------------------

    @cached_property
    def statement_payments(self) -> StatementPayments:
        """Statement rows that are payouts (`withdrawn_cents` > 0) or collections
        (`paid_in_cents` > 0): rows of the payment role (not charges, reversals, internal
        transfers or money that did not move) with a receipt, one row per receipt and direction
        (the first), the payouts first. The later rows of a receipt and direction are kept
        aside as `repeats` for `duplicate_receipt`."""
        entries = self.statement.entries
        usable = (
            entries["receipt"].notna().to_numpy() & (entries["role"] == ROLE_PAYMENT).to_numpy()
        )
        paid_in = (entries["paid_in_cents"].fillna(0) > 0).to_numpy()
        picked, repeated, receipts = [], [], {}
        for direction, side in zip(DIRECTIONS, (~paid_in, paid_in), strict=True):
            candidates = np.flatnonzero(usable & side)
            receipts[direction] = FirstRows.of(entries["receipt"].iloc[candidates])
            first = candidates[receipts[direction].rows]
            picked.append(first)
            kept = np.zeros(len(entries), dtype=bool)
            kept[first] = True
            repeated.append(candidates[~kept[candidates]])
        return StatementPayments(
            rows=_with_direction(entries, picked),
            receipts=receipts,
            repeats=_with_direction(entries, repeated),
        )

    @cached_property
    def our_records(self) -> pd.DataFrame:
        """Our completed payouts and collections (payout_receipts, collection_receipts and
        c2b_receipts, with `kind` payout, payment or c2b, and `direction`), and `repeat`: the
        record holds a receipt another one keeps. Of the records sharing a receipt, the one
        whose amount the statement shows for it keeps it, else the first completed (then the
        smaller id). A repeat is a duplicate_receipt finding and is not compared with the
        statement again."""
        ours = pd.concat(
            [
                self.payout_receipts.assign(kind="payout", direction="withdrawn"),
                collection_receipts(self.stk).assign(kind="payment", direction="paid in"),
                c2b_receipts(self.c2b).assign(kind="c2b", direction="paid in"),
            ],
            ignore_index=True,
        )
        shared = ours[ours["receipt"].notna() & ours["receipt"].duplicated(keep=False)]
        shared = shared.assign(unconfirmed=~self._statement_confirms(shared))
        shared = shared.sort_values(["unconfirmed", "occurred_at", "id"], kind="stable")
        ours["repeat"] = ours.index.isin(shared.index[shared["receipt"].duplicated()])
        return ours

    def _statement_confirms(self, records: pd.DataFrame) -> np.ndarray:
        """Whether the statement shows each record's receipt, in its direction, for its
        amount."""
        if self.statement is None or records.empty:
            return np.zeros(len(records), dtype=bool)
        rows = self.statement_payments.rows
        rows = rows[rows["receipt"].isin(records["receipt"]).to_numpy()]
        shown = set(zip(rows["receipt"], rows["direction"], rows["amount_cents"], strict=True))
        return np.array(
            [
                (receipt, direction, amount) in shown
                for receipt, direction, amount in zip(
                    records["receipt"], records["direction"], records["amount_cents"], strict=True
                )
            ],
            dtype=bool,
        )

    @cached_property
    def statement_matches(self) -> StatementMatches:
        """Our completed payouts and collections with `statement_cents` (the amount of the
        statement row with their receipt and direction, missing when none), and the statement's
        payment rows with `recorded` (whether one of those carries their receipt). One hash
        lookup per direction serves the three statement checks."""
        payments = self.statement_payments
        statement = payments.rows.copy(deep=False)
        ours = self.our_records
        ours = ours[~ours["repeat"].to_numpy()]
        cents = np.zeros(len(ours), dtype=np.int64)
        absent = np.ones(len(ours), dtype=bool)
        recorded = np.zeros(len(statement), dtype=bool)
        for direction in DIRECTIONS:
            side = np.flatnonzero((statement["direction"] == direction).to_numpy())
            mine = (ours["direction"] == direction).to_numpy()
            position = payments.receipts[direction].keys.get_indexer(
                ours["receipt"].to_numpy()[mine]
            )
            found = position >= 0
            amounts = statement["amount_cents"].array[side].take(position, allow_fill=True)
            cents[mine] = amounts.to_numpy(dtype=np.int64, na_value=0)
            absent[mine] = amounts.isna()
            recorded[side[position[found]]] = True
        ours["statement_cents"] = pd.arrays.IntegerArray(cents, absent)
        statement["recorded"] = recorded
        return StatementMatches(ours=ours, rows=statement)

    @cached_property
    def statement_charges(self) -> StatementCharges:
        """The statement's B2C payout rows with their charge rows (recon.charges)."""
        return statement_charges(self.statement.entries)
