-- TEMP placeholder for another helper's 0007 (the lead drops this file when merging).
SELECT 1;
