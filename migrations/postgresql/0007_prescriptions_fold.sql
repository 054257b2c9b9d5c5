-- rx_prescriptions keeps, instead of every fact of the prescription, where its stored state's
-- fold stands (the last fact folded, by contract order): a new fact after it extends the state
-- at the cost of one fact; a late one has the state derived again from the store. Rows written
-- before hold their facts there, which the projector reads once and replaces.
ALTER TABLE rx_prescriptions RENAME COLUMN facts TO fold;
