SELECT json_object('a', 1, 'b', json_array(1, 2, 'x')), json_extract('{"a":[1,{"b":2}]}', '$.a[1].b');
SELECT printf('%d %s %.3f %x', 42, 'str', 3.14159, 255), format('%q', 'it''s');
SELECT row_number() OVER (ORDER BY x), sum(x) OVER (ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM (SELECT 1 AS x UNION ALL SELECT 2 UNION ALL SELECT 3);
SELECT datetime('now') IS NOT NULL, julianday('2024-01-01'), strftime('%Y', '2024-06-01');
SELECT abs(-9223372036854775807 - 1);
SELECT CAST('12abc' AS INTEGER), CAST(x'41' AS TEXT), typeof(1e400), 1 / 0, 9223372036854775807 + 1;
SELECT substr('hello', -3, 2), instr('abc', 'c'), replace('aaa', 'a', 'bb'), hex(zeroblob(4)), unicode('é'), char(233);
SELECT 'a' LIKE 'A', 'abc' GLOB 'a*', coalesce(NULL, NULL, 3), iif(1, 'y', 'n'), nullif(1, 1);
