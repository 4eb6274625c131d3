-- One operation, as operators see it.
SELECT {operation_columns} FROM {schema}.operations WHERE id = $1
