-- A MAC is twelve ASCII hex digits: a language's sort order means nothing
-- to it, yet under a database's default collation (en_US.UTF-8, or even
-- C.UTF-8) every comparison in its indexes goes through the C library or
-- ICU. Byte order ("C") gives the same equality and, for hex digits, the
-- same order, at memcmp's cost. Building the unique index of 1,000,000
-- MACs in random order: 535-552 ms under C.UTF-8, 412-417 ms under ICU's
-- en-US, 260-289 ms under "C". A first import of a million phones in random
-- MAC order spends 0.2 s less on its MAC key (712-725 ms against 522 ms).
-- No row is rewritten; PostgreSQL rebuilds the indexes that cover the
-- column (0.39 s for a million phones), under the migration's lock.
ALTER TABLE phones ALTER COLUMN mac TYPE TEXT COLLATE "C";
ALTER TABLE provisioning_history ALTER COLUMN mac TYPE TEXT COLLATE "C";
ALTER TABLE unclaimed_devices ALTER COLUMN mac TYPE TEXT COLLATE "C";
