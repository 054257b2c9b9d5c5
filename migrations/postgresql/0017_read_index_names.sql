-- A rebuild's swap (`drx projections rebuild`) used to leave the read tables' indexes, and the
-- constraints they back, under the names PostgreSQL gave the fresh table's copies
-- (rx_prescriptions_rebuild_status_prescription_id_idx for rx_prescriptions_status_idx), so a
-- later migration naming one of them would have failed on a rebuilt database only. Rebuilds now
-- rename the copies back (infrastructure/rebuild.py); this gives a database rebuilt before that
-- the names the migrations gave, each index found by its table and its definition.
DO $$
DECLARE
    wanted record;
    found text;
BEGIN
    FOR wanted IN SELECT * FROM (VALUES
        ('rx_prescriptions', 'rx_prescriptions_pkey', 'btree (aggregate_id)'),
        ('rx_prescriptions', 'rx_prescriptions_prescription_id_key', 'btree (prescription_id)'),
        ('rx_prescriptions', 'rx_prescriptions_status_idx', 'btree (status, prescription_id)'),
        ('rx_prescriptions', 'rx_prescriptions_patient_idx', 'btree (patient_id, prescription_id)'),
        ('rx_prescriptions', 'rx_prescriptions_pharmacy_idx',
            'btree (pharmacy_ncpdp_id, prescription_id)'),
        ('rx_prescriptions', 'rx_prescriptions_review_idx', 'btree (needs_review, prescription_id)'),
        ('rx_prescriptions', 'rx_prescriptions_updated_id_idx', 'btree (updated_at, prescription_id)'),
        ('rx_prescriptions', 'rx_prescriptions_id_updated_idx',
            'btree (prescription_id) INCLUDE (updated_at)'),
        ('rx_deliveries', 'rx_deliveries_pkey', 'btree (aggregate_id)'),
        ('rx_deliveries', 'rx_deliveries_event_id_key', 'btree (event_id)'),
        ('rx_deliveries', 'rx_deliveries_seq_key', 'btree (seq)'),
        ('rx_deliveries', 'rx_deliveries_status_idx', 'btree (status, seq)'),
        ('rx_changes', 'rx_changes_pkey', 'btree ("position")'),
        ('rx_changes', 'rx_changes_type_idx', 'btree (type, "position")'),
        ('rx_changes', 'rx_changes_prescription_idx', 'btree (prescription_id, "position")'),
        ('rx_changes', 'rx_changes_patient_idx', 'btree (patient_id, "position")'),
        ('rx_change_heads', 'rx_change_heads_pkey', 'btree (aggregate_id)'),
        ('rx_change_heads', 'rx_change_heads_prescription_id_key', 'btree (prescription_id)'),
        ('rx_change_heads', 'rx_change_heads_due_idx',
            'btree (due_from) WHERE (due_from IS NOT NULL)')
    ) AS w (tbl, name, shape)
    LOOP
        found := NULL;
        SELECT c.relname INTO found
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = wanted.tbl::regclass
          AND split_part(pg_get_indexdef(i.indexrelid), ' USING ', 2) = wanted.shape
          AND c.relname <> wanted.name
        ORDER BY c.relname
        LIMIT 1;
        IF found IS NOT NULL AND to_regclass(quote_ident(wanted.name)) IS NULL THEN
            EXECUTE format('ALTER INDEX %I RENAME TO %I', found, wanted.name);
        END IF;
    END LOOP;
END
$$;
