CREATE TABLE "{{60}}" ("{{60}}x", "{{60}}y");
INSERT INTO "{{60}}" VALUES ('{{100}}', 1);
--> query
SELECT * FROM "{{60}}"
--> exec
ALTER TABLE "{{60}}" RENAME COLUMN "{{60}}x" TO "{{200}}"
--> query
SELECT '{{10}}' AS "{{100}}"
--> exec
SELECT * FROM "{{1023}}"
--> exec
CREATE TABLE c (v CHECK (length(v) < 3) CONSTRAINT "{{500}}");
--> execute
INSERT INTO c VALUES ('long')
--> exec
SELECT json_extract('{}', printf('%.*c', 1500000, 'x'))
