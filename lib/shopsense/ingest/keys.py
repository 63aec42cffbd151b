"""Pseudonymising customer ids: a keyed hash (HMAC-SHA256 from Spark built-ins) and where its
key comes from.

The key is, in order: the environment variable conf names (``ingest.pseudonym_key_env``;
required outside local mode); for the generated sample only, a fixed development key (its ids
are made up, and tests join the planted truth through it); otherwise, in local mode, a random
key made once per warehouse and kept beside the tables, not in them
(``<warehouse>/_secrets/pseudonym.key``, a folder and file only their owner can read), so that two
warehouses give different pseudonyms for the same id and one warehouse always the same. The run
record says which kind was used.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from pyspark.sql import Column
from pyspark.sql import functions as F

from shopsense.core.config import Conf, resolve_path
from shopsense.core.settings import SourceSpec
from shopsense.ingest.read import IngestError

DEV_PSEUDONYM_KEY = "shopsense-local-development-key-not-secret"
KEY_FILE = Path("_secrets") / "pseudonym.key"


def hmac_sha256_hex(col: Column, key: bytes) -> Column:
    """HMAC-SHA256 of a string column under ``key`` (RFC 2104), from Spark built-ins, as hex."""
    block = 64
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    ipad = bytearray(b ^ 0x36 for b in key)
    opad = bytearray(b ^ 0x5C for b in key)
    inner = F.unhex(F.sha2(F.concat(F.lit(ipad), F.encode(col, "UTF-8")), 256))
    return F.sha2(F.concat(F.lit(opad), inner), 256)


def pseudonymise(col: Column, key: bytes) -> Column:
    """The keyed pseudonym of a customer id: the first 32 hex digits (128 bits) of its
    HMAC-SHA256; null stays null."""
    return F.when(col.isNull(), None).otherwise(F.substring(hmac_sha256_hex(col, key), 1, 32))


def warehouse_key_path(conf: Conf) -> Path:
    """Where the warehouse's own key lives; local file systems only."""
    warehouse = resolve_path(conf.warehouse)
    if "://" in warehouse and not warehouse.startswith("file:"):
        raise IngestError(f"environment variable {conf.ingest.pseudonym_key_env} is not set and the "
                          f"warehouse {warehouse} is not on the local file system, where a "
                          f"warehouse key could be kept: set the variable")
    return Path(warehouse.removeprefix("file://").removeprefix("file:")) / KEY_FILE


def warehouse_key(conf: Conf) -> bytes:
    """The warehouse's random key, made on first use (32 random bytes, hex) with owner-only
    permissions; an existing key that others can read is refused."""
    path = warehouse_key_path(conf)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
    if path.stat().st_mode & 0o077:
        raise IngestError(f"the pseudonym key {path} can be read by others than its owner: "
                          f"chmod 600 it (and think about who has seen it)")
    value = path.read_text().strip()
    if len(value) < 32:
        raise IngestError(f"the pseudonym key {path} is damaged (too short): restore it from a "
                          f"backup, or remove it to start new pseudonyms (they will not match "
                          f"the old ones)")
    return value.encode("utf-8")


def pseudonym_key(conf: Conf, source: SourceSpec) -> tuple[bytes, str]:
    """(key, kind) for ingesting ``source``; kind is ``environment``, ``development`` (the
    generated sample) or ``warehouse``. Outside local mode an unset variable is an error."""
    env_name = conf.ingest.pseudonym_key_env
    value = os.environ.get(env_name)
    if value:
        return value.encode("utf-8"), "environment"
    if not conf.is_local:
        raise IngestError(f"environment variable {env_name} is not set: it holds the key that "
                          f"pseudonymises customer ids (required outside local mode)")
    if source.generated:
        return DEV_PSEUDONYM_KEY.encode("utf-8"), "development"
    return warehouse_key(conf), "warehouse"
