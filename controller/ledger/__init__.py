"""Tamper-evident, hash-chained, Ed25519-signed ledger of VPP transactions (not a consensus network)."""

from controller.ledger.chain import Ledger, LedgerEntry, VerifyReport

__all__ = ["Ledger", "LedgerEntry", "VerifyReport"]
