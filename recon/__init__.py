"""Reconciliation toolkit for M-Pesa payments: load, check, report, email.

Importing the package is cheap (no pandas): `service.py` imports `recon.codes` and `recon.rules`
for the result-code catalogue and the phone, amount and time rules they share.
"""
