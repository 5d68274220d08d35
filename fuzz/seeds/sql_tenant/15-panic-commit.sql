-- panic_after 5
CREATE TABLE f (k INTEGER PRIMARY KEY, x);
--> execute
INSERT INTO f (x) VALUES (randomblob(3000))
--> exec
INSERT INTO f (x) SELECT randomblob(3000) FROM f; INSERT INTO f (x) SELECT x FROM f
--> query
SELECT k, length(x) FROM f ORDER BY k DESC LIMIT 3
--> exec
BEGIN; UPDATE f SET x = zeroblob(100) WHERE k % 2 = 0; DELETE FROM f WHERE k > 5; COMMIT
