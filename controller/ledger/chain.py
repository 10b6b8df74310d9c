"""The ledger: blocks of entries, each block holding the previous block's hash and a Merkle
root over its entries, signed by the VPP operator (Ed25519) and optionally countersigned by
participants. Stored in SQLite; `verify` recomputes everything and names the first tamper.

Canonical forms (what is hashed and signed), so another implementation can verify:
- entry body: JSON of {"id","kind","participant","payload","t"} with sorted keys,
  separators (",", ":"), UTF-8; entry hash = SHA-256(0x00 || body).
- Merkle root: pairwise SHA-256(0x01 || left || right), odd levels duplicate the last node.
- block header: JSON of {"version","height","prev_hash","merkle_root","time","n_entries",
  "operator_pubkey"} in the same canonical form; block hash = SHA-256(header).
- operator signature and countersignatures: Ed25519 over the 32-byte block hash.
- every block is signed by the operator key of block 0 (or the trusted key given to verify);
  a countersignature must use the key a "participant" entry registered earlier in the chain
  (payload {"pubkey": hex, ...}, participant = its id).
A permissioned chain can carry these blocks unchanged: the header is the consensus payload.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.ledger.merkle import merkle_root, sha256
from controller.security.keys import public_bytes, public_key_from_bytes

ENTRY_KINDS = ("participant", "telemetry_digest", "dr_event", "bid", "award", "settlement", "credit_change")
GENESIS_PREV = "00" * 32

SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (height INTEGER PRIMARY KEY, header TEXT NOT NULL,
    hash TEXT NOT NULL, operator_sig TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (height INTEGER NOT NULL, idx INTEGER NOT NULL,
    entry_id TEXT NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL, hash TEXT NOT NULL,
    PRIMARY KEY (height, idx));
CREATE TABLE IF NOT EXISTS countersigs (height INTEGER NOT NULL, participant TEXT NOT NULL,
    pubkey TEXT NOT NULL, sig TEXT NOT NULL, PRIMARY KEY (height, participant));
"""


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class LedgerEntry:
    kind: str
    entry_id: str
    payload: dict
    participant: str | None = None
    t: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def __post_init__(self):
        if self.kind not in ENTRY_KINDS:
            raise ValueError(f"ledger entry kind {self.kind!r} not one of {ENTRY_KINDS}")

    def body(self) -> bytes:
        return canonical({"id": self.entry_id, "kind": self.kind, "participant": self.participant,
                          "payload": self.payload, "t": self.t})


def entry_hash(body: bytes) -> bytes:
    return sha256(b"\x00" + body)


@dataclass
class VerifyReport:
    ok: bool
    blocks: int
    entries: int
    height: int | None = None  # first tampered block
    index: int | None = None  # first tampered entry in that block (None: block header/signature)
    entry_id: str | None = None
    problem: str = ""

    def line(self) -> str:
        if self.ok:
            return f"ok: {self.blocks} blocks, {self.entries} entries, chain and signatures verified"
        where = f"block {self.height}"
        if self.index is not None:
            where += f", entry {self.index} (id {self.entry_id})"
        return f"TAMPERED: {where}: {self.problem}"


class Ledger:
    """Append-only ledger in one SQLite file."""

    def __init__(self, db_path, operator_key: Ed25519PrivateKey | None = None, read_only: bool = False):
        """`read_only` opens the file without creating or changing it (for verify)."""
        if read_only:
            self.db = sqlite3.connect(f"{Path(db_path).resolve().as_uri()}?mode=ro", uri=True)
        else:
            self.db = sqlite3.connect(str(db_path))
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
        self.key = None if read_only else operator_key

    def close(self) -> None:
        self.db.close()

    def head(self) -> tuple[int, str]:
        row = self.db.execute("SELECT height, hash FROM blocks ORDER BY height DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else (-1, GENESIS_PREV)

    def append_block(self, entries: list[LedgerEntry], time: str | None = None) -> int:
        """Seal `entries` into a new signed block; returns its height."""
        if self.key is None:
            raise ValueError("ledger opened without the operator key: cannot append")
        if not entries:
            raise ValueError("a block needs at least one entry")
        height, prev = self.head()
        height += 1
        bodies = [e.body() for e in entries]
        hashes = [entry_hash(b) for b in bodies]
        header = {"version": 1, "height": height, "prev_hash": prev,
                  "merkle_root": merkle_root(hashes).hex(),
                  "time": time or datetime.now(UTC).isoformat(),
                  "n_entries": len(entries), "operator_pubkey": public_bytes(self.key).hex()}
        header_b = canonical(header)
        bhash = sha256(header_b)
        with self.db:
            self.db.execute("INSERT INTO blocks VALUES (?,?,?,?)",
                            (height, header_b.decode(), bhash.hex(), self.key.sign(bhash).hex()))
            self.db.executemany("INSERT INTO entries VALUES (?,?,?,?,?,?)",
                                [(height, i, e.entry_id, e.kind, b.decode(), h.hex())
                                 for i, (e, b, h) in enumerate(zip(entries, bodies, hashes))])
        return height

    def countersign(self, height: int, participant: str, key: Ed25519PrivateKey) -> None:
        """A participant acknowledges a block by signing its hash."""
        row = self.db.execute("SELECT hash FROM blocks WHERE height=?", (height,)).fetchone()
        if row is None:
            raise ValueError(f"no block {height}")
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO countersigs VALUES (?,?,?,?)",
                            (height, participant, public_bytes(key).hex(),
                             key.sign(bytes.fromhex(row[0])).hex()))

    def entries(self, kind: str | None = None) -> list[dict]:
        q = "SELECT body FROM entries" + (" WHERE kind=?" if kind else "") + " ORDER BY height, idx"
        return [json.loads(r[0]) for r in self.db.execute(q, (kind,) if kind else ())]

    def verify(self, operator_pubkey: bytes | None = None) -> VerifyReport:
        """Recompute hashes, Merkle roots, the chain and every signature, block by block."""
        prev = GENESIS_PREV
        n_entries = 0
        registered: dict[str, str] = {}  # participant -> pubkey hex, from "participant" entries
        first_key = None
        blocks = self.db.execute("SELECT height, header, hash, operator_sig FROM blocks ORDER BY height").fetchall()
        for expect_h, (height, header_s, bhash, sig) in enumerate(blocks):
            def bad(problem, index=None, entry_id=None, height=height, n_entries=n_entries):
                return VerifyReport(False, len(blocks), n_entries, height, index, entry_id, problem)

            rows = self.db.execute("SELECT idx, entry_id, kind, body, hash FROM entries WHERE height=? "
                                   "ORDER BY idx", (height,)).fetchall()
            hashes = []
            for pos, (idx, eid, kind, body, h) in enumerate(rows):
                recomputed = entry_hash(body.encode())
                try:
                    parsed = json.loads(body)
                except ValueError:
                    return bad("entry body is not valid JSON", idx, eid)
                if idx != pos:
                    return bad(f"entry index {idx} out of sequence", pos, eid)
                if recomputed.hex() != h:
                    return bad("entry hash does not match its content", idx, eid)
                if parsed.get("id") != eid or parsed.get("kind") != kind:
                    return bad(f"entry id/kind columns ({eid!r}, {kind!r}) differ from the signed body",
                               idx, parsed.get("id"))
                hashes.append(recomputed)
                if kind == "participant" and isinstance(parsed.get("payload"), dict):
                    registered[parsed.get("participant")] = parsed["payload"].get("pubkey")
            try:
                header = json.loads(header_s)
            except ValueError:
                return bad("block header is not valid JSON")
            if header.get("height") != height or height != expect_h:
                return bad("block height out of sequence")
            if header.get("prev_hash") != prev:
                return bad("previous-block hash does not match the chain")
            if header.get("n_entries") != len(rows):
                return bad(f"block holds {len(rows)} entries, header says {header.get('n_entries')}")
            if merkle_root(hashes).hex() != header.get("merkle_root"):
                return bad("Merkle root does not match the entries")
            computed = sha256(canonical(header))
            if canonical(header).decode() != header_s or computed.hex() != bhash:
                return bad("block hash does not match its header")
            try:
                pub_raw = bytes.fromhex(header["operator_pubkey"])
                if operator_pubkey is not None and pub_raw != operator_pubkey:
                    return bad("block signed by a key other than the trusted operator key")
                if height == 0:
                    first_key = pub_raw
                elif pub_raw != first_key:
                    return bad("block signed by a key other than block 0's operator key")
                public_key_from_bytes(pub_raw).verify(bytes.fromhex(sig), computed)
            except (InvalidSignature, ValueError, KeyError):
                return bad("operator signature invalid")
            for participant, pub, csig in self.db.execute(
                    "SELECT participant, pubkey, sig FROM countersigs WHERE height=? ORDER BY participant",
                    (height,)):
                if registered.get(participant) != pub:
                    return bad(f"countersignature of {participant} uses a key not registered for it")
                try:
                    public_key_from_bytes(bytes.fromhex(pub)).verify(bytes.fromhex(csig), computed)
                except (InvalidSignature, ValueError):
                    return bad(f"countersignature of {participant} invalid")
            prev = bhash
            n_entries += len(rows)
        return VerifyReport(True, len(blocks), n_entries)
