-- panic_after 12
CREATE TABLE g (x, y);
CREATE INDEX g_x ON g (x);
INSERT INTO g SELECT i, randomblob(500) FROM (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 200) SELECT i FROM c);
--> query
SELECT count(*), sum(length(y)) FROM g
--> exec
UPDATE g SET y = zeroblob(800) WHERE x % 3 = 0;
--> exec
ALTER TABLE g ADD COLUMN z DEFAULT 1; DELETE FROM g WHERE x > 100
