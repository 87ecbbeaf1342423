-- A value derived from the secret key, kept when a node first opens the
-- database with it: a node whose key differs (a key file missing and
-- created anew, another deployment's key) is refused at start instead of
-- sealing secrets no other node can open.
ALTER TABLE dialtone_meta ADD COLUMN key_check TEXT;
