CREATE TABLE t (x, y, z); INSERT INTO t VALUES (1, 2, 3), ('two', x'0102', NULL);
CREATE INDEX t_y ON t (y);
--> query
SELECT * FROM t
--> query
SELECT *, rowid FROM t WHERE x IS NOT NULL ORDER BY 1
--> execute
INSERT INTO t (x) VALUES (randomblob(40))
--> exec
DROP INDEX t_y; ALTER TABLE t DROP COLUMN z
--> exec
ALTER TABLE t DROP COLUMN y
--> exec
ALTER TABLE t ADD COLUMN w DEFAULT 'new'
--> exec
ALTER TABLE t RENAME COLUMN x TO renamed
--> exec
ALTER TABLE t RENAME TO u; CREATE TABLE t (a, b, c, d, e, f, g, h)
--> exec
INSERT INTO t SELECT 1, 2, 3, 4, 5, 6, 7, 8
--> exec
DROP TABLE t; CREATE VIEW t AS SELECT * FROM u, u AS u2
