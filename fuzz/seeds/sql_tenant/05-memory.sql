SELECT length(zeroblob(2000000000));
SELECT length(randomblob(900000) || randomblob(900000));
WITH RECURSIVE r(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM r) SELECT length(s) FROM r;
