"""`gridtwin ledger keygen | month | verify`: operator keys, a settled month, chain verification."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("ledger", help="tamper-evident ledger: keygen, simulated month, verify")
    lsub = p.add_subparsers(dest="ledger_cmd", required=True)
    k = lsub.add_parser("keygen", help="write a new Ed25519 operator key (mode 600)")
    k.add_argument("--out", required=True)
    k.set_defaults(func=cmd_keygen)
    m = lsub.add_parser("month", help="settle a simulated month: statements + ledger")
    m.add_argument("--out", required=True, help="folder for statements and ledger.sqlite")
    m.add_argument("--key-file", help="operator key (PEM, mode 600); or env GRIDTWIN_OPERATOR_KEY")
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--participants", type=int, default=20)
    m.add_argument("--days", type=int, default=30)
    m.set_defaults(func=cmd_month)
    v = lsub.add_parser("verify", help="recompute the whole chain; exit 1 on the first tamper")
    v.add_argument("--db", required=True)
    v.add_argument("--operator-pubkey", help="hex of the trusted operator public key")
    v.set_defaults(func=cmd_verify)


def _user_error(msg):
    from gridtwin_cli import UserError

    return UserError(msg)


def cmd_keygen(args) -> int:
    from controller.security.keys import generate_private_key, public_bytes

    if Path(args.out).exists():
        raise _user_error(f"{args.out}: exists; refusing to overwrite a key")
    key = generate_private_key(args.out)
    print(f"wrote {args.out}; public key {public_bytes(key).hex()}")
    return 0


def cmd_month(args) -> int:
    from controller.ledger.chain import Ledger
    from controller.security.keys import SecretError, load_private_key
    from controller.settlement.month import simulate_month
    from controller.settlement.statement import write_statements

    try:
        key = load_private_key(args.key_file, env="GRIDTWIN_OPERATOR_KEY")
    except SecretError as e:
        raise _user_error(str(e)) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = out / "ledger.sqlite"
    if db.exists():
        raise _user_error(f"{db}: exists; a ledger is append-only, choose a new --out")
    ledger = Ledger(db, key)
    res = simulate_month(args.seed, args.participants, args.days, ledger=ledger)
    ledger.close()
    write_statements(res.statements, out / "statements")
    summary = res.summary()
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    print(json.dumps(summary, indent=1, default=float))
    return 0


def cmd_verify(args) -> int:
    from controller.ledger.chain import Ledger

    if not Path(args.db).exists():
        raise _user_error(f"{args.db}: no such ledger file")
    try:
        pub = bytes.fromhex(args.operator_pubkey) if args.operator_pubkey else None
    except ValueError:
        raise _user_error(f"--operator-pubkey {args.operator_pubkey!r}: expected 64 hex digits") from None
    try:
        led = Ledger(args.db, read_only=True)
        rep = led.verify(pub)
        led.close()
    except sqlite3.DatabaseError as e:
        raise _user_error(f"{args.db}: not a readable ledger database ({e})") from None
    print(rep.line())
    return 0 if rep.ok else 1
