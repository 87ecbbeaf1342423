-- A value derived from the secret key, kept when the database is first
-- opened with it: a key that differs (a key file missing and created
-- anew) is refused at start instead of sealing secrets nothing can open.
ALTER TABLE dialtone_meta ADD COLUMN key_check TEXT;
