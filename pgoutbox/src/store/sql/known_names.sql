-- Every operation name ever published or registered (the names an untyped
-- relay's patterns are matched against).
SELECT DISTINCT name FROM {schema}.operation_types ORDER BY name
