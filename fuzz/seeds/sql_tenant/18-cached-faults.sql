-- fail_after 9
CREATE TABLE t (x, y); INSERT INTO t VALUES (1, 2);
--> query
SELECT * FROM t
--> execute
INSERT INTO t (x) VALUES (randomblob(2000))
--> exec
ALTER TABLE t ADD COLUMN c DEFAULT 5
--> exec
BEGIN
--> exec
INSERT INTO t (x) SELECT randomblob(3000) FROM t
--> exec
ALTER TABLE t DROP COLUMN y
--> exec
COMMIT
