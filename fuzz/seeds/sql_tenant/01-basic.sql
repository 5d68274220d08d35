CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n REAL, b BLOB);
INSERT INTO t (v, n, b) VALUES ('a', 1.5, x'0102'), ('b', NULL, zeroblob(10));
UPDATE t SET v = upper(v) WHERE id = 1;
SELECT id, v, n, length(b) FROM t ORDER BY v DESC;
DELETE FROM t WHERE n IS NULL;
