-- How many times a processed delivery's id came again with another body (contract section 4,
-- rule 2): such a delivery is listed with the status `conflict`.
ALTER TABLE rx_deliveries ADD COLUMN conflicts integer NOT NULL DEFAULT 0;
