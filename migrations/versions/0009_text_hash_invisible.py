"""samples.text_hash: of the text without the characters no model reads (format characters such as a
zero-width space, joiner or BOM; control characters; variation selectors), as ``kdstore.textkey`` hashes from this revision
on, so that a text copied from a web page with a zero-width space in it is a duplicate of the same
text without one. Only texts holding such a character change. Two stored samples that become
duplicates of each other stay two samples (their logits, label edits and predictions are theirs):
the one whose key this revision leaves as it was keeps it, or else the first stored takes the new
key, and the others keep their old one.

Revision ID: 0009
Revises: 0008
"""
import hashlib
import re
import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

CHUNK = 5_000
_SPACE = re.compile(r"\s+")
_SELECTORS = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")


# copies of the rules, not imports: a migration stays what it was when written
def _hash_before(text: str) -> str:
    normal = _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()
    return hashlib.blake2b(normal.encode("utf-8"), digest_size=16).hexdigest()


def _hash_after(text: str) -> str:
    text = _SELECTORS.sub("", text)
    if not text.isprintable():
        text = "".join(c for c in text if c.isspace() or unicodedata.category(c) not in ("Cf", "Cc"))
    return _hash_before(text)


def _rehash(rule) -> None:
    conn = op.get_bind()
    samples = sa.table("samples", sa.column("id", sa.Integer), sa.column("text", sa.Text), sa.column("text_hash", sa.String))
    changed = []  # (id, old key, new key) of the texts not all printable or with a selector: no other key changes
    rows = conn.execute(sa.select(samples.c.id, samples.c.text, samples.c.text_hash).order_by(samples.c.id)
                        .execution_options(yield_per=CHUNK))  # (PostgreSQL: a server-side cursor, not every row at once)
    for sample_id, text, old in rows:
        if text is not None and (not text.isprintable() or _SELECTORS.search(text)):
            new = rule(text)
            if new != old:
                changed.append((sample_id, old, new))
    if not changed:
        return
    wanted = sorted({new for _, _, new in changed})
    held = set()
    for start in range(0, len(wanted), CHUNK):
        held.update(conn.execute(sa.select(samples.c.text_hash).where(samples.c.text_hash.in_(wanted[start:start + CHUNK]))).scalars())
    updates, taken = [], set(held)
    for sample_id, _, new in changed:  # in id order: the first stored takes a key no sample holds
        if new not in taken:
            taken.add(new)
            updates.append({"sid": sample_id, "key": new})
    statement = samples.update().where(samples.c.id == sa.bindparam("sid")).values(text_hash=sa.bindparam("key"))
    for start in range(0, len(updates), CHUNK):
        conn.execute(statement, updates[start:start + CHUNK])


def upgrade() -> None:
    _rehash(_hash_after)


def downgrade() -> None:
    _rehash(_hash_before)
