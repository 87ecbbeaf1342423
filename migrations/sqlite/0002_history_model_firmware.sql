-- What the phone said it is, as seen at each fetch: model and firmware from
-- the User-Agent or the request.
ALTER TABLE provisioning_history ADD COLUMN model TEXT;
ALTER TABLE provisioning_history ADD COLUMN firmware TEXT;
