"""The reconciliation report: data first (summary, match rate, aging, top findings), then its
renderings: text (`render`), HTML (`to_html`, from templates/report.html), XLSX (`to_xlsx`, a
sheet per check plus a summary), CSV, a dict (`to_dict`) and PNG charts; `write` puts them all in
a directory."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from string import Template

import pandas as pd

from recon.checks import CHECK_NAMES, CHECKS, COUNT_ONLY, KES_AT_RISK, Findings, Options
from recon.progress import Progress, stage

TEMPLATE = Path(__file__).resolve().parent / "templates" / "report.html"
AGING_BUCKETS = [
    ("<1 h", 0, 1),
    ("1-4 h", 1, 4),
    ("4-24 h", 4, 24),
    ("1-3 d", 24, 72),
    ("3-7 d", 72, 168),
    ("> 7 d", 168, float("inf")),
]
TOP_FINDINGS = 10
CHARGES_TITLE = "Charges against the tariff (B2C payouts on the statement, per Nairobi day)"
CHARGES_HEADINGS = ("day", "payouts", "charged", "expected", "difference", "not checked")
CHECK_MEANINGS = {
    name: " ".join(check.__doc__.split()) for name, check in zip(CHECK_NAMES, CHECKS, strict=True)
}


@dataclass
class Report:
    """One reconciliation run, ready to render."""

    findings: Findings
    options: Options
    sources: dict[str, str] = field(default_factory=dict)
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))

    # -- data -------------------------------------------------------------------------------

    @property
    def is_clean(self) -> bool:
        return self.findings.is_clean

    @property
    def exit_code(self) -> int:
        """0 when clean, 1 with findings (the CLI's convention)."""
        return 0 if self.is_clean else 1

    @property
    def summary(self) -> pd.DataFrame:
        return self.findings.summary()

    @property
    def total_at_risk(self) -> Decimal:
        valued = (amount for amount in self.summary["kes_at_risk"] if amount is not None)
        return sum(valued, Decimal("0.00"))

    @property
    def open_items(self) -> pd.DataFrame:
        """The findings that put money at risk (at_risk > 0): what is still to be cleared.
        Failures, redeliveries and statement self-checks move no money and are not."""
        frame = self.findings.frame
        valued = [amount is not None and amount > 0 for amount in frame["at_risk"]]
        return frame[pd.Series(valued, index=frame.index, dtype=bool)]

    @property
    def aging(self) -> pd.DataFrame:
        """Open items (open_items) per age bucket: count and KES at risk."""
        frame = self.open_items
        occurred = pd.to_datetime(frame["occurred_at"], errors="coerce")
        ages = (
            self.options.now - occurred
        ).dt.total_seconds() / 3600  # unrounded, unlike age_hours
        rows = []
        for label, low, high in AGING_BUCKETS:
            inside = frame[(ages >= low) & (ages < high)]
            at_risk = sum((v for v in inside["at_risk"] if v is not None), Decimal("0.00"))
            rows.append({"bucket": label, "count": len(inside), "kes_at_risk": at_risk})
        return pd.DataFrame(rows, columns=["bucket", "count", "kes_at_risk"])

    @property
    def match_rates(self) -> list[tuple[str, int, int, float | None]]:
        return [
            (what, matched, total, (matched / total) if total else None)
            for what, (matched, total) in self.findings.match.items()
        ]

    def top_findings(self, limit: int = TOP_FINDINGS) -> pd.DataFrame:
        """The findings with the most KES at risk, largest first."""
        frame = self.findings.frame
        if frame.empty:
            return frame
        weight = frame["at_risk"].map(lambda value: value if value is not None else Decimal(0))
        order = sorted(range(len(frame)), key=lambda i: weight.iloc[i], reverse=True)
        return frame.iloc[order[:limit]]

    @property
    def charges(self) -> pd.DataFrame | None:
        """Per Nairobi day: the B2C payout rows on the statement, KES charged, KES the tariff
        expected, the difference and the payouts whose charge the tariff does not know (not
        checked), then a `total` row; None without a statement."""
        per_day = self.findings.charges
        if per_day is None:
            return None
        columns = ["payouts", "charged_cents", "expected_cents", "not_checked"]
        total = pd.DataFrame([{"day": "total", **per_day[columns].sum().to_dict()}])
        days = per_day.assign(day=[f"{pd.Timestamp(day):%Y-%m-%d}" for day in per_day["day"]])
        table = pd.concat([days, total], ignore_index=True) if len(days) else total
        return pd.DataFrame(
            {
                "day": table["day"],
                "payouts": table["payouts"].astype(int),
                "charged": [_from_cents(cents) for cents in table["charged_cents"]],
                "expected": [_from_cents(cents) for cents in table["expected_cents"]],
                "difference": [
                    _from_cents(charged - expected)
                    for charged, expected in zip(
                        table["charged_cents"], table["expected_cents"], strict=True
                    )
                ],
                "not_checked": table["not_checked"].astype(int),
            }
        )

    @property
    def period_text(self) -> str:
        since, until = self.options.since, self.options.until
        return (
            f"Period {_time(since) if since else 'start'} to {_time(until) if until else 'now'}"
            f" UTC, as of {_time(self.options.now)} UTC"
        )

    @property
    def headline(self) -> str:
        if self.is_clean:
            return self._clean_headline()
        total, money = len(self.findings), f"KES {_money(self.total_at_risk)}"
        counted = self.summary[self.summary["check"].isin(COUNT_ONLY) & (self.summary["count"] > 0)]
        if counted.empty:
            return f"{total} findings, {money} at risk."
        moving_none = int(counted["count"].sum())
        which = ", ".join(f"{row.check} {row.count}" for row in counted.itertuples())
        return (
            f"{total} findings: {total - moving_none} with {money} at risk; "
            f"{moving_none} that move no money ({which})."
        )

    def _clean_headline(self) -> str:
        """Clean about what was looked at: the counts, or that there was nothing to check."""
        looked_at = self.findings.traffic
        if not any(looked_at.values()):
            kinds = _listing([f"{kind}s" for kind in looked_at], "or")
            return f"No traffic in the period: no {kinds}, so nothing was checked."
        counts = [
            f"{count:,} {kind}{'' if count == 1 else 's'}" for kind, count in looked_at.items()
        ]
        return f"Clean: no findings in {_listing(counts, 'and')}."

    def to_dict(self) -> dict:
        return {
            "period": {
                "since": _time(self.options.since),
                "until": _time(self.options.until),
                "as_of": _time(self.options.now),
            },
            "sources": dict(self.sources),
            "scope": list(self.findings.scope),
            "findings": len(self.findings),
            "kes_at_risk": str(self.total_at_risk),
            "summary": [
                {"check": row.check, "count": int(row.count), "kes_at_risk": _text(row.kes_at_risk)}
                for row in self.summary.itertuples()
            ],
            "match_rates": [
                {"what": what, "matched": matched, "total": total, "rate": rate}
                for what, matched, total, rate in self.match_rates
            ],
            "aging": [
                {"bucket": row.bucket, "count": int(row.count), "kes_at_risk": str(row.kes_at_risk)}
                for row in self.aging.itertuples()
            ],
            "charges": None
            if self.charges is None
            else [
                {
                    "day": row.day,
                    "payouts": int(row.payouts),
                    "charged": str(row.charged),
                    "expected": str(row.expected),
                    "difference": str(row.difference),
                    "not_checked": int(row.not_checked),
                }
                for row in self.charges.itertuples()
            ],
            "exit_code": self.exit_code,
        }

    # -- text -------------------------------------------------------------------------------

    def render(self) -> str:
        """Plain text: headline, summary, match rate, aging, top findings."""
        lines = ["M-Pesa reconciliation report", self.period_text, *self.findings.scope]
        lines += [self.headline, ""]
        lines += ["Summary by check", f"{'check':<28}{'count':>7}{'KES at risk':>16}"]
        for row in self.summary.itertuples():
            lines.append(f"{row.check:<28}{row.count:>7}{_valued(row.kes_at_risk):>16}")
        lines.append(f"KES at risk: {KES_AT_RISK}.")
        lines += ["", "Match rate"]
        for what, matched, total, rate in self.match_rates:
            lines.append(f"{what:<32}{matched:>9,} / {total:<9,}{_rate(rate):>7}")
        lines += ["", "Aging of open items", f"{'age':<10}{'count':>7}{'KES at risk':>16}"]
        for row in self.aging.itertuples():
            lines.append(f"{row.bucket:<10}{row.count:>7}{_money(row.kes_at_risk):>16}")
        lines += ["", *self._charges_text()]
        top = self.top_findings()
        if not top.empty:
            lines += ["", "Top findings"]
            for rank, row in enumerate(top.itertuples(), start=1):
                lines.append(f"{rank:>2}. [{row.check}] {row.subject}: {row.reason}")
        return "\n".join(lines) + "\n"

    def _charges_text(self) -> list[str]:
        if self.charges is None:
            return [CHARGES_TITLE, "No statement given: charges not checked."]
        first, *rest = CHARGES_HEADINGS
        lines = [CHARGES_TITLE, f"{first:<12}" + "".join(f"{name:>12}" for name in rest)]
        for row in self.charges.itertuples(index=False):
            cells = [row.day, f"{row.payouts:,}", *map(_money, row[2:5]), f"{row.not_checked:,}"]
            lines.append(f"{cells[0]:<12}" + "".join(f"{cell:>12}" for cell in cells[1:]))
        return lines

    # -- HTML -------------------------------------------------------------------------------

    def to_html(self, *, images: str = "base64") -> str:
        """The HTML report; charts as base64 data URIs, or as `cid:<file>` references for an
        email that attaches them as related parts (images="cid")."""
        return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
            title="M-Pesa reconciliation report",
            period=_e(self.period_text),
            scope="\n".join(f'<p class="scope">{_e(line)}</p>' for line in self.findings.scope),
            headline=_e(self.headline),
            headline_class="clean" if self.is_clean else "dirty",
            summary_rows="\n".join(self._summary_rows()),
            at_risk_note=_e(f"KES at risk: {KES_AT_RISK}."),
            match_rows="\n".join(
                _tr([what, f"{matched:,}", f"{total:,}", _rate(rate)], numbers={1, 2, 3})
                for what, matched, total, rate in self.match_rates
            ),
            aging_rows="\n".join(
                _tr([row.bucket, row.count, _money(row.kes_at_risk)], numbers={1, 2})
                for row in self.aging.itertuples()
            ),
            charges=self._charges_html(),
            charts="\n".join(self._chart_tags(images)),
            top_rows="\n".join(
                _tr(
                    [
                        row.check,
                        row.subject,
                        row.transaction_id or "",
                        _money(row.at_risk),
                        row.reason,
                    ],
                    numbers={3},
                )
                for row in self.top_findings().itertuples()
            ),
        )

    def _summary_rows(self):
        for row in self.summary.itertuples():
            yield _tr(
                [row.check, CHECK_MEANINGS[row.check], row.count, _valued(row.kes_at_risk)],
                numbers={2, 3},
                flagged=row.count > 0,
            )

    def _charges_html(self) -> str:
        if self.charges is None:
            return "<p>No statement given: charges not checked.</p>"
        head = "".join(
            (f'<th class="number">{_e(name)}</th>' if index else f"<th>{_e(name)}</th>")
            for index, name in enumerate(CHARGES_HEADINGS)
        )
        rows = [
            _tr(
                [row.day, f"{row.payouts:,}", *map(_money, row[2:5]), f"{row.not_checked:,}"],
                numbers={1, 2, 3, 4, 5},
                flagged=row.difference != 0 or row.not_checked > 0,
            )
            for row in self.charges.itertuples(index=False)
        ]
        return "\n".join(["<table>", f"  <tr>{head}</tr>", *rows, "</table>"])

    def _chart_tags(self, images: str):
        for name, png in self.charts.items():
            if images == "cid":
                source = f"cid:{name}"
            else:
                source = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            yield f'<p><img src="{source}" alt="{_e(name)}"></p>'

    @cached_property
    def charts(self) -> dict[str, bytes]:
        """Chart file name -> PNG bytes (drawn once)."""
        from recon.charts import render_charts

        return render_charts(self)

    # -- files ------------------------------------------------------------------------------

    def findings_table(self) -> pd.DataFrame:
        """Findings as written to CSV/XLSX: amounts as two-place Decimals, and text a
        spreadsheet would run as a formula made inert (see _inert_text)."""
        return _inert_text(self.findings.frame.copy())

    def findings_csv(self) -> bytes:
        return self.findings_table().to_csv(index=False, date_format="%Y-%m-%d %H:%M:%S").encode()

    def summary_csv(self) -> bytes:
        return self.summary.to_csv(index=False).encode()

    def to_xlsx(self, target) -> None:
        """A `summary` sheet (summary, match rate, aging), then one sheet per check."""
        with pd.ExcelWriter(target, engine="openpyxl") as writer:
            self.summary.to_excel(writer, sheet_name="summary", index=False)
            start = len(self.summary) + 2
            match = pd.DataFrame(self.match_rates, columns=["what", "matched", "total", "rate"])
            match.to_excel(writer, sheet_name="summary", index=False, startrow=start)
            start += len(match) + 2
            self.aging.to_excel(writer, sheet_name="summary", index=False, startrow=start)
            frame = self.findings_table()
            for name in CHECK_NAMES:
                frame[frame["check"] == name].to_excel(writer, sheet_name=name, index=False)

    def xlsx_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.to_xlsx(buffer)
        return buffer.getvalue()

    def write(self, out_dir: str | Path, progress: Progress | None = None) -> list[Path]:
        """findings.csv, summary.csv, report.txt, report.html, report.xlsx, report.json (the
        period and summary, as `to_dict`) and the charts, each rendered and written in turn (a
        stage for `progress`; report.html draws the charts)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        renderings: dict[str, Callable[[], bytes]] = {
            "findings.csv": self.findings_csv,
            "summary.csv": self.summary_csv,
            "report.txt": lambda: self.render().encode(),
            "report.html": lambda: self.to_html().encode(),
            "report.xlsx": self.xlsx_bytes,
            "report.json": lambda: json.dumps(self.to_dict(), indent=2).encode(),
        }
        written = []
        for name, rendering in renderings.items():
            written.append(_write(out / name, rendering, progress))
        for name in self.charts:
            written.append(_write(out / name, lambda name=name: self.charts[name], progress))
        return written


def _write(path: Path, rendering: Callable[[], bytes], progress: Progress | None) -> Path:
    with stage(progress, f"writing {path.name}"):
        path.write_bytes(rendering())
    return path


def _tr(cells, *, numbers=frozenset(), flagged: bool = False) -> str:
    tds = "".join(
        f'<td class="number">{_e(cell)}</td>' if index in numbers else f"<td>{_e(cell)}</td>"
        for index, cell in enumerate(cells)
    )
    return f'  <tr class="flagged">{tds}</tr>' if flagged else f"  <tr>{tds}</tr>"


def table_csv(frame: pd.DataFrame) -> bytes:
    """Any table as CSV, its formula-like text made inert (the findings' rule, for other
    files the project hands to spreadsheets)."""
    return _inert_text(frame.copy()).to_csv(index=False).encode()


def table_xlsx(frame: pd.DataFrame, sheet_name: str) -> bytes:
    """Any table as a one-sheet XLSX, its formula-like text made inert."""
    buffer = io.BytesIO()
    with pd.ExcelWriter(buffer, engine="openpyxl") as writer:
        _inert_text(frame.copy()).to_excel(writer, sheet_name=sheet_name, index=False)
    return buffer.getvalue()


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _inert_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells that a spreadsheet would read as a formula (beginning =, +, -, @, a tab or a
    carriage return: a reference, a receiver's name or a callback's field written by anyone)
    get a leading ' so they show as text (OWASP's advice against CSV injection)."""
    for column in frame.columns:
        values = frame[column]
        if not pd.api.types.is_string_dtype(values) and values.dtype != "object":
            continue
        risky = values.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_STARTS))
        if risky.any():
            frame[column] = values.where(~risky, "'" + values.astype(str))
    return frame


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _money(amount: object) -> str:
    if amount is None:
        return "-"
    return f"{Decimal(amount):,.2f}"


def _from_cents(cents: object) -> Decimal:
    return Decimal(int(cents)).scaleb(-2).quantize(Decimal("0.01"))


def _listing(items: list[str], conjunction: str) -> str:
    """'a, b and c' (or 'a, b or c')."""
    if len(items) < 2:
        return "".join(items)
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def _valued(amount: Decimal | None) -> str:
    """A check's KES at risk; 'count only' for a check that moves no money."""
    return "count only" if amount is None else _money(amount)


def _text(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _time(moment) -> str | None:
    return None if moment is None else f"{pd.Timestamp(moment):%Y-%m-%d %H:%M:%S}"
