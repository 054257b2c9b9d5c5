-- The list filtered by when a prescription was last updated is ordered by prescription id: its
-- page's ids are picked from an index alone, and only the page's rows read: from (updated_at,
-- prescription_id) where the instant lets few rows through, by walking (prescription_id,
-- updated_at) where it lets many (infrastructure/queries.py; PostgreSQL's migration 0014).
CREATE INDEX rx_prescriptions_updated_id_idx ON rx_prescriptions (updated_at, prescription_id);
CREATE INDEX rx_prescriptions_id_updated_idx ON rx_prescriptions (prescription_id, updated_at);
DROP INDEX rx_prescriptions_updated_idx;
