-- What the bulk import last found or wrote of each phone: its MAC and a
-- keyed digest of the phone with its lines (sync/src/store/bulk/digest.rs;
-- see the PostgreSQL migration of the same name). Any write to a phone or
-- one of its lines forgets the phone's digest, here, so no write path can
-- leave a stale one.
CREATE TABLE phone_digests (
    id INTEGER PRIMARY KEY,
    mac TEXT NOT NULL,
    high INTEGER NOT NULL,
    low INTEGER NOT NULL
);

CREATE TRIGGER phones_forget_digest_insert AFTER INSERT ON phones
BEGIN
    DELETE FROM phone_digests WHERE id = NEW.id;
END;
CREATE TRIGGER phones_forget_digest_update AFTER UPDATE ON phones
BEGIN
    DELETE FROM phone_digests WHERE id IN (OLD.id, NEW.id);
END;
CREATE TRIGGER phones_forget_digest_delete AFTER DELETE ON phones
BEGIN
    DELETE FROM phone_digests WHERE id = OLD.id;
END;
CREATE TRIGGER lines_forget_digest_insert AFTER INSERT ON lines
BEGIN
    DELETE FROM phone_digests WHERE id = NEW.phone_id;
END;
CREATE TRIGGER lines_forget_digest_update AFTER UPDATE ON lines
BEGIN
    DELETE FROM phone_digests WHERE id IN (OLD.phone_id, NEW.phone_id);
END;
CREATE TRIGGER lines_forget_digest_delete AFTER DELETE ON lines
BEGIN
    DELETE FROM phone_digests WHERE id = OLD.phone_id;
END;
