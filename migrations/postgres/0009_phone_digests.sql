-- What the bulk import last found or wrote of each phone: its MAC and a
-- keyed digest of the phone with its lines (sync/src/store/bulk/digest.rs).
-- A re-import reads this table instead of every column of phones and
-- lines, and reads in full only the phones whose digest is missing or
-- differs from the run's.
--
-- A digest is only as good as the rule that keeps it honest: any write to
-- a phone or to one of its lines (insert, update, delete, truncate) makes
-- the database forget the phone's digest, here, so no write path (the API,
-- the CLI, psql) can leave a stale one behind. The import writes digests
-- after its own rows. A phone without a digest is compared in full.
--
-- No foreign key to phones: the triggers already delete a digest with its
-- phone, a key would cost a probe per digest written, and it would stop a
-- first import from dropping the phones' primary key.
CREATE TABLE phone_digests (
    id BIGINT PRIMARY KEY,
    mac TEXT COLLATE "C" NOT NULL,
    high BIGINT NOT NULL,
    low BIGINT NOT NULL
);

-- A statement at a time, from the transition tables, as the change log is
-- (0006): an import's UPDATE of 10,000 lines costs one DELETE.
-- The bulk import keeps the digests of what it writes itself, and says so
-- for its own statements (a transaction-local setting): its UPDATE of
-- 10,000 phones and their lines spent ~0.1 s here for nothing.
CREATE FUNCTION dialtone_forget_digests() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('dialtone.import_keeps_digests', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'phones' THEN
        IF TG_OP = 'INSERT' THEN
            DELETE FROM phone_digests WHERE id IN (SELECT id FROM new_rows);
        ELSIF TG_OP = 'UPDATE' THEN
            DELETE FROM phone_digests WHERE id IN (SELECT id FROM old_rows UNION SELECT id FROM new_rows);
        ELSE
            DELETE FROM phone_digests WHERE id IN (SELECT id FROM old_rows);
        END IF;
    ELSIF TG_OP = 'INSERT' THEN
        DELETE FROM phone_digests WHERE id IN (SELECT phone_id FROM new_rows);
    ELSIF TG_OP = 'UPDATE' THEN
        DELETE FROM phone_digests
            WHERE id IN (SELECT phone_id FROM old_rows UNION SELECT phone_id FROM new_rows);
    ELSE
        DELETE FROM phone_digests WHERE id IN (SELECT phone_id FROM old_rows);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER phones_forget_digest_insert AFTER INSERT ON phones REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dialtone_forget_digests();
CREATE TRIGGER phones_forget_digest_update AFTER UPDATE ON phones REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dialtone_forget_digests();
CREATE TRIGGER phones_forget_digest_delete AFTER DELETE ON phones REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dialtone_forget_digests();
CREATE TRIGGER lines_forget_digest_insert AFTER INSERT ON lines REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dialtone_forget_digests();
CREATE TRIGGER lines_forget_digest_update AFTER UPDATE ON lines REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dialtone_forget_digests();
CREATE TRIGGER lines_forget_digest_delete AFTER DELETE ON lines REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dialtone_forget_digests();

-- TRUNCATE fires no row trigger: emptying either table forgets them all.
CREATE FUNCTION dialtone_forget_all_digests() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE phone_digests;
    RETURN NULL;
END;
$$;
CREATE TRIGGER phones_forget_digests_truncate AFTER TRUNCATE ON phones
    FOR EACH STATEMENT EXECUTE FUNCTION dialtone_forget_all_digests();
CREATE TRIGGER lines_forget_digests_truncate AFTER TRUNCATE ON lines
    FOR EACH STATEMENT EXECUTE FUNCTION dialtone_forget_all_digests();
