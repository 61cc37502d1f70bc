-- The id a client gave its request (X-Client-Request-Id, or a load balancer's X-Request-ID),
-- kept beside the gateway's own request id, which alone keys the records: a client that sent
-- one id twice had its second request's row and settlement dropped as the first's.
ALTER TABLE request_log ADD COLUMN client_request_id TEXT;
CREATE INDEX request_log_client_id ON request_log (client_request_id) WHERE client_request_id IS NOT NULL;
