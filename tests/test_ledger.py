"""Ledger: a verified chain; any single-byte edit of a stored entry is detected and named."""

import sqlite3

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.ledger.chain import Ledger, LedgerEntry
from controller.security.keys import public_bytes


@pytest.fixture()
def ledger(tmp_path):
    key = Ed25519PrivateKey.generate()
    led = Ledger(tmp_path / "l.sqlite", key)
    for b in range(3):
        led.append_block([LedgerEntry("dr_event" if i == 0 else "telemetry_digest", f"e{b}-{i}",
                                      {"kw": 10.5 * i, "block": b}, f"p{i}", f"2026-07-0{b + 1}T00:00:00Z")
                          for i in range(4)])
    participant = Ed25519PrivateKey.generate()
    led.countersign(1, "p1", participant)
    return led, key


def test_intact_chain_verifies(ledger):
    led, key = ledger
    rep = led.verify(public_bytes(key))
    assert rep.ok and rep.blocks == 3 and rep.entries == 12, rep.line()


def test_every_single_byte_edit_of_an_entry_is_named(ledger):
    led, key = ledger
    rows = led.db.execute("SELECT height, idx, entry_id, body, hash FROM entries").fetchall()
    checked = 0
    for height, idx, eid, body, h in rows:
        for column, text in (("body", body), ("hash", h), ("entry_id", eid)):
            for pos in range(0, len(text), 7 if column == "body" else 5):
                c = text[pos]
                tampered = text[:pos] + ("0" if c != "0" else "1") + text[pos + 1:]
                led.db.execute(f"UPDATE entries SET {column}=? WHERE height=? AND idx=?", (tampered, height, idx))
                rep = led.verify(public_bytes(key))
                led.db.execute(f"UPDATE entries SET {column}=? WHERE height=? AND idx=?", (text, height, idx))
                assert not rep.ok, (column, pos)
                assert (rep.height, rep.index) == (height, idx), rep.line()
                checked += 1
    assert checked > 300
    assert led.verify(public_bytes(key)).ok


def test_header_signature_and_countersignature_tampering(ledger):
    led, key = ledger
    hdr = led.db.execute("SELECT header FROM blocks WHERE height=1").fetchone()[0]
    led.db.execute("UPDATE blocks SET header=? WHERE height=1", (hdr.replace('"version":1', '"version":2'),))
    rep = led.verify()
    assert not rep.ok and rep.height == 1 and rep.index is None
    led.db.execute("UPDATE blocks SET header=? WHERE height=1", (hdr,))
    sig = led.db.execute("SELECT sig FROM countersigs WHERE height=1").fetchone()[0]
    led.db.execute("UPDATE countersigs SET sig=? WHERE height=1", (("0" if sig[0] != "0" else "1") + sig[1:],))
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


def test_cli_verify_names_the_tampered_entry(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    cli = [sys.executable, str(root / "gridtwin_cli.py"), "ledger"]
    key = tmp_path / "op.pem"
    assert subprocess.run(cli + ["keygen", "--out", str(key)], capture_output=True, timeout=60).returncode == 0
    r = subprocess.run(cli + ["month", "--out", str(tmp_path / "m"), "--key-file", str(key), "--days", "3",
                              "--participants", "4"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    db = tmp_path / "m" / "ledger.sqlite"
    ok = subprocess.run(cli + ["verify", "--db", str(db)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: 4 blocks")
    con = sqlite3.connect(db)
    body = con.execute("SELECT body FROM entries WHERE height=1 AND idx=2").fetchone()[0]
    con.execute("UPDATE entries SET body=? WHERE height=1 AND idx=2", (body.replace('"', "'", 1),))
    con.commit()
    con.close()
    bad = subprocess.run(cli + ["verify", "--db", str(db)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "block 1, entry 2" in bad.stdout
