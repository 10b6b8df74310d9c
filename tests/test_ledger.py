"""Ledger: a verified chain; any single-byte edit of a stored entry is detected and named."""

import sqlite3

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.ledger.chain import Ledger, LedgerEntry
from controller.security.keys import public_bytes


@pytest.fixture()
def ledger(tmp_path):
    key = Ed25519PrivateKey.generate()
    participant = Ed25519PrivateKey.generate()
    led = Ledger(tmp_path / "l.sqlite", key)
    led.append_block([LedgerEntry("participant", "participant-p1", {"pubkey": public_bytes(participant).hex()},
                                  "p1", "2026-06-30T00:00:00Z")])
    for b in range(3):
        led.append_block([LedgerEntry("dr_event" if i == 0 else "telemetry_digest", f"e{b}-{i}",
                                      {"kw": 10.5 * i, "block": b}, f"p{i}", f"2026-07-0{b + 1}T00:00:00Z")
                          for i in range(3)])
    led.countersign(2, "p1", participant)
    return led, key


def test_intact_chain_verifies(ledger):
    led, key = ledger
    rep = led.verify(public_bytes(key))
    assert rep.ok and rep.blocks == 4 and rep.entries == 10, rep.line()


def _flip(text: str, pos: int) -> str:
    c = text[pos]
    return text[:pos] + ("0" if c != "0" else "1") + text[pos + 1:]


def test_every_single_byte_edit_of_every_entry_is_named(ledger):
    """Every position of every stored column of every entry, one edit at a time."""
    led, key = ledger
    rows = led.db.execute("SELECT height, idx, entry_id, kind, body, hash FROM entries").fetchall()
    checked = 0
    for height, idx, eid, kind, body, h in rows:
        for column, text in (("body", body), ("hash", h), ("entry_id", eid), ("kind", kind)):
            for pos in range(len(text)):
                led.db.execute(f"UPDATE entries SET {column}=? WHERE height=? AND idx=?",
                               (_flip(text, pos), height, idx))
                rep = led.verify(public_bytes(key))
                led.db.execute(f"UPDATE entries SET {column}=? WHERE height=? AND idx=?", (text, height, idx))
                assert not rep.ok, (column, pos)
                assert (rep.height, rep.index, rep.entry_id) == (height, idx, eid), (column, pos, rep.line())
                checked += 1
        led.db.execute("UPDATE entries SET idx=? WHERE height=? AND idx=?", (idx + 7, height, idx))
        rep = led.verify(public_bytes(key))
        led.db.execute("UPDATE entries SET idx=? WHERE height=? AND idx=?", (idx, height, idx + 7))
        assert not rep.ok and rep.height == height, rep.line()
    assert checked > 1500
    assert led.verify(public_bytes(key)).ok


def test_rewritten_tail_with_another_key_is_refused(ledger, tmp_path):
    """An attacker who rewrites the last block and re-signs it with a key of their own is caught
    even when verify is not told the operator key (key continuity from block 0)."""
    led, _ = ledger
    mallory = Ed25519PrivateKey.generate()
    led.db.execute("DELETE FROM entries WHERE height=3")
    led.db.execute("DELETE FROM blocks WHERE height=3")
    led.db.commit()
    forged = Ledger(tmp_path / "l.sqlite", mallory)
    forged.append_block([LedgerEntry("settlement", "s-1", {"total_cents": 10**6}, "p1", "2026-07-31T00:00:00Z")])
    rep = forged.verify()
    assert not rep.ok and rep.height == 3 and "block 0's operator key" in rep.problem


def test_countersignature_with_an_unregistered_key_is_refused(ledger):
    led, key = ledger
    led.countersign(3, "p1", Ed25519PrivateKey.generate())
    rep = led.verify(public_bytes(key))
    assert not rep.ok and rep.height == 3 and "not registered" in rep.problem


def test_header_signature_and_countersignature_tampering(ledger):
    led, _ = ledger
    hdr = led.db.execute("SELECT header FROM blocks WHERE height=1").fetchone()[0]
    led.db.execute("UPDATE blocks SET header=? WHERE height=1", (hdr.replace('"version":1', '"version":2'),))
    rep = led.verify()
    assert not rep.ok and rep.height == 1 and rep.index is None
    led.db.execute("UPDATE blocks SET header=? WHERE height=1", (hdr,))
    sig = led.db.execute("SELECT sig FROM countersigs WHERE height=2").fetchone()[0]
    led.db.execute("UPDATE countersigs SET sig=? WHERE height=2", (_flip(sig, 0),))
    rep = led.verify()
    assert not rep.ok and "countersignature of p1" in rep.problem


def test_foreign_operator_key_is_refused(ledger):
    led, _ = ledger
    other = Ed25519PrivateKey.generate()
    assert "other than the trusted operator" in led.verify(public_bytes(other)).problem


def test_deleted_block_breaks_the_chain(ledger, tmp_path):
    led, key = ledger
    led.db.execute("DELETE FROM blocks WHERE height=1")
    led.db.execute("DELETE FROM entries WHERE height=1")
    rep = led.verify(public_bytes(key))
    assert not rep.ok and rep.height == 2


def test_cli_month_then_verify_names_the_tampered_entry(tmp_path, capsys):
    import subprocess
    import sys
    from pathlib import Path

    from gridtwin_cli import main

    key = tmp_path / "op.pem"
    assert main(["ledger", "keygen", "--out", str(key)]) == 0
    assert main(["ledger", "month", "--out", str(tmp_path / "m"), "--key-file", str(key), "--days", "3",
                 "--participants", "4"]) == 0
    db = tmp_path / "m" / "ledger.sqlite"
    capsys.readouterr()
    assert main(["ledger", "verify", "--db", str(db)]) == 0
    assert capsys.readouterr().out.startswith("ok: 4 blocks")
    con = sqlite3.connect(db)
    body, eid = con.execute("SELECT body, entry_id FROM entries WHERE height=1 AND idx=2").fetchone()
    con.execute("UPDATE entries SET body=? WHERE height=1 AND idx=2", (body.replace('"', "'", 1),))
    con.commit()
    con.close()
    root = Path(__file__).resolve().parent.parent
    bad = subprocess.run([sys.executable, str(root / "gridtwin_cli.py"), "ledger", "verify", "--db", str(db)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1 and f"block 1, entry 2 (id {eid})" in bad.stdout, bad.stdout + bad.stderr
