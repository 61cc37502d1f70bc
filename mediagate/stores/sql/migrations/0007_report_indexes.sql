-- The admin API's reads (stores/sql/reports.py).
--
-- Usage for a month by team and model reads
-- every day rollup of the month: with this index holding every column that query touches, in
-- its GROUP BY order, both engines answer it from the index alone, in order, without a sort
-- or a visit to the table. It starts with (grain, bucket), so 0002's index on those two
-- columns only is redundant: dropped, so a rollup upsert maintains one index more, not two.
CREATE INDEX usage_rollups_report ON usage_rollups (
    grain, bucket, team, model, route, key,
    requests, errors, reads, images, video_seconds, cost_micros
);
DROP INDEX usage_rollups_bucket;

-- A status class filter (`status=5xx`) as one equality on the class, rows in time order: a
-- page of the newest 5xx reads 50 index entries, where (status, at) would sort every 5xx.
CREATE INDEX request_log_status_class_at ON request_log ((status / 100), at);
