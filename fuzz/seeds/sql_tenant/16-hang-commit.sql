-- hang_after 7
CREATE TABLE f (k INTEGER PRIMARY KEY, x);
--> execute
INSERT INTO f (x) VALUES (randomblob(3000))
--> exec
INSERT INTO f (x) SELECT randomblob(3000) FROM f; INSERT INTO f (x) SELECT x FROM f
--> query
SELECT k, length(x) FROM f ORDER BY k DESC LIMIT 3
--> exec
VACUUM
